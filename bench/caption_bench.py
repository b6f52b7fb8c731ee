"""Caption serving benchmark: the in-process limit, the gRPC captioner per dtype, and a one-at-a-time HTTP baseline.

    python -m bench.caption_bench [--quick] [--model-preset small] [--dtypes float32,auto] [--threads N] [--out F]

Every figure comes from this one run, measured side by side on the same model (a ``captioner.tiny`` preset,
built offline on first use), the same kind of images and the same generation options (``--max-new-tokens``,
greedy) in every path:

- ``limit``: per dtype, the captioner's ``generate`` called in this process with no serving around it: the latency of
  one image, and the throughput one image at a time and in batches of ``--batch-size`` (the physical limit of the
  machine in that dtype). This process runs with the servers' own threading (``imagewire_serving.threads``), so
  the ratios to it isolate what serving adds.
- ``grpc:DTYPE``: the real ``imagewire-captioner`` (``python -m captioner --dtype ...``) in a subprocess per
  dtype of ``--dtypes`` (``auto`` is resolved by the server itself and read back from ListModels; a dtype
  listed twice runs once), driven by closed-loop ``AsyncCaptionClient`` callers over one channel.
- ``http``: ``bench.http_baseline`` (FastAPI + uvicorn, multipart, one request at a time, float32, OpenMP's
  default threading: as the reference runner runs) in a subprocess, driven by closed-loop httpx callers.
- ``comparison``: per gRPC server, the targets against the in-process model of its dtype and against the baseline.

All servers are up for the whole run and are measured alternately, so a change in the machine's other load hits
all alike: at concurrency 1 every round runs one in-process call per dtype and one call to each server (rotating
the order); each higher level runs the servers back to back (rotating which goes first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from bench import output
from bench.caption import report
from bench.caption.images import ImagePool
from bench.caption.limit import InProcess, measure_again, measure_limit
from bench.caption.load import measure_servers
from bench.caption.plan import make_plan
from bench.caption.stats import load_average
from bench.caption.targets import GrpcTarget, HttpTarget, Target
from imagewire_serving.launcher import ServerProcess
from imagewire_serving.threads import WAIT_VARIABLES, prepare_openmp

GRPC_NAME = "imagewire-captioner"
# The name bench.http_baseline announces (not imported from it: it loads torch).
HTTP_NAME = "http-baseline"
# Loading a benchmark-size model on a busy CPU, several at once, can take minutes; the large preset's first start
# with --compile auto measures both dtypes eagerly and builds twelve packages (on the 2-core VM: over 15 minutes).
SERVER_START_TIMEOUT_S = 1800.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.caption_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter levels, no c=64")
    parser.add_argument("--model-preset", default="small", help="captioner.tiny preset to build and serve")
    parser.add_argument("--dtypes", default="float32,auto",
                        help="comma-separated --dtype values, one captioner each (auto: what the server picks)")
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="the captioners' --compile; the in-process limit compiles the parts each compiled")
    parser.add_argument("--device", default="cpu", help="device for every path (auto, cpu, cuda:N)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="caption length in every path")
    parser.add_argument("--batch-size", type=int, default=16, help="the limit's batch and the server's max batch")
    parser.add_argument("--max-batch-delay-ms", type=float, default=None, help="server batch delay (default: its own)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the generated PNGs")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per concurrency level > 1 (default: 15, or 5 with --quick, and at least "
                             "3 in-process batch times without --quick)")
    parser.add_argument("--concurrency", default=None, help="comma-separated levels (default 1,4,16,64)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the captioners (--threads), of this process and of the baseline "
                             "(OMP_NUM_THREADS); default: each its own choice")
    parser.add_argument("--skip-http", action="store_true", help="measure only the limits and the gRPC servers")
    output.add_out(parser)
    return parser.parse_args(argv)


class Servers:
    """The servers of one run, started into ``stack`` (which stops them): the baseline and a captioner per dtype."""

    def __init__(self, stack: contextlib.ExitStack, model_dir: Path, args: argparse.Namespace) -> None:
        self._stack, self._model_dir, self._args = stack, model_dir, args
        self.commands: dict[str, str] = {}
        self.targets: list[Target] = []

    async def start(self, specs: list[str], connections: int) -> dict[str, str]:
        """Start them all; returns the dtype each --dtype spec resolved to (``auto`` as the server chose)."""
        args = self._args
        baseline = None
        if not args.skip_http:
            command = [sys.executable, "-m", "bench.http_baseline", "--model", str(self._model_dir),
                       "--device", args.device, "--dtype", "float32"]
            # The reference runner's threading: OpenMP's defaults, whatever this process was started with.
            env: dict[str, str | None] = {name: None for name in WAIT_VARIABLES}
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
            baseline = self._launch(HTTP_NAME, command, env, None)
        resolved: dict[str, str] = {}
        for spec in specs:  # one at a time: a spec resolving to a dtype already served is not started twice
            log: list[str] = []
            server = self._launch(f"grpc:{spec}", self._grpc_command(spec), {}, log)
            server.wait_ready()
            target = GrpcTarget("", server.target, args.max_new_tokens, log)
            dtype = await target.connect()
            resolved[spec] = dtype
            if any(t.dtype == dtype for t in self.targets):
                await target.close()
                server.terminate()
                continue
            target.name = f"grpc:{dtype}"
            self.commands[target.name] = " ".join(server.command[1:])
            self.targets.append(target)
        if baseline is not None:
            baseline.wait_ready()
            self.targets.append(HttpTarget(baseline.target, args.max_new_tokens, connections))
            self.commands["http"] = " ".join(baseline.command[1:])
        return resolved

    def _grpc_command(self, spec: str) -> list[str]:
        args = self._args
        command = [sys.executable, "-m", "captioner", "--model", str(self._model_dir), "--device", args.device,
                   "--dtype", spec, "--compile", args.compile, "--max-batch-size", str(args.batch_size),
                   "--log-format", "json"]
        if args.max_batch_delay_ms is not None:
            command += ["--max-batch-delay-ms", str(args.max_batch_delay_ms)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        return command

    def _launch(self, name: str, command: list[str], env: dict[str, str | None], log: list[str] | None
                ) -> ServerProcess:
        return self._stack.enter_context(ServerProcess.start(
            command, name=HTTP_NAME if name == HTTP_NAME else GRPC_NAME, env=env,
            start_timeout_s=SERVER_START_TIMEOUT_S,
            # The captioner's JSON RPC log lines carry its own queue and model time for each request.
            on_stderr_line=log.append if log is not None else None))

    async def close(self) -> None:
        for target in self.targets:
            await target.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark: the servers up, the in-process limits, the servers side by side, the comparison."""
    from captioner import tiny
    from imagewire_serving.compiling import configure
    from imagewire_serving.device import Capabilities, resolve_device
    from imagewire_serving.model_cache import cache_root
    from imagewire_serving.threads import apply_threads

    plan = make_plan(args)
    started = time.perf_counter()
    model_dir = tiny.ensure_model(args.model_preset)
    pool = ImagePool(256, args.image_size)
    specs = list(dict.fromkeys(spec.strip() for spec in args.dtypes.split(",") if spec.strip()))
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        servers = Servers(stack, model_dir, args)
        try:
            resolved = await servers.start(specs, max(plan.concurrency))
            apply_threads(args.threads)
            dtypes = list(dict.fromkeys(["float32", *resolved.values()]))
            compiled = {target.dtype: (target.compiled_parts, target.lone_parts) for target in servers.targets
                        if isinstance(target, GrpcTarget)}
            if any(every or lone for every, lone in compiled.values()):
                # The servers' compile cache (they name none): the packages they built are loaded, not built again.
                configure(cache_root() / "compile", resolve_device(args.device))
            models = {dtype: InProcess(model_dir, args.device, dtype, args.max_new_tokens,
                                       *compiled.get(dtype, ((), ()))) for dtype in dtypes}
            first = models["float32"]
            out["machine"] = report.machine(first)
            out["setup"] = report.setup(args.model_preset, tiny.PRESETS[args.model_preset], model_dir, first, pool,
                                        plan, max_new_tokens=args.max_new_tokens, image_size=args.image_size)
            out["setup"].update(dtypes=resolved, servers=servers.commands,
                                compiled={dtype: {"every batch": list(every), "batch 1": list(lone)}
                                          for dtype, (every, lone) in compiled.items()})
            limits = {dtype: measure_limit(model, pool, plan.single_runs, plan.batch_runs, args.batch_size,
                                           warm_up=True) for dtype, model in models.items()}
            out["limit"] = limits
            out.update(await measure_servers(servers.targets, models, pool, plan, limits))
        finally:
            await servers.close()
    if plan.limit_again:
        for dtype, model in models.items():
            measure_again(model, pool, limits[dtype], args.batch_size)
    device = resolve_device(args.device)
    low_precision = device.type == "cuda" or bool(Capabilities.detect(device).cpu_dtypes())
    out["comparison"] = report.compare(limits, {k: v for k, v in out.items() if k.startswith(("grpc:", "http"))},
                                       resolved.get("auto", ""), report.baseline_targets(args.model_preset,
                                                                                         low_precision))
    out["machine"]["load_average_end"] = load_average()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # This process's model runs with the servers' own OpenMP wait policy (read once, when torch loads).
    prepare_openmp()
    return output.emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    sys.exit(main())
