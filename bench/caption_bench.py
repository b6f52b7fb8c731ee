"""Caption serving benchmark: the in-process limit, the gRPC captioner, and a one-at-a-time HTTP baseline.

    python -m bench.caption_bench [--quick] [--model-preset bench] [--torch-threads N] [--out FILE]

Every figure comes from this one run, measured side by side on the same model (a ``captioner.tiny`` preset,
built offline on first use), the same kind of images and the same generation options (``--max-new-tokens``,
greedy) in all three paths:

- ``limit``: ``BlipBackend.generate`` called in this process with no serving around it: the latency of one image,
  and the throughput one image at a time and in batches of ``--batch-size`` (the physical limit of the machine).
  Measured at the start, and again at the end of a full run to show how much the machine drifted.
- ``grpc``: the real ``imagewire-captioner`` (``python -m captioner``) in a subprocess, driven by closed-loop
  ``AsyncCaptionClient`` callers over one channel.
- ``http``: ``bench.http_baseline`` (FastAPI + uvicorn, multipart, one request at a time) in a subprocess,
  driven by closed-loop httpx callers.
- ``comparison``: gRPC / HTTP throughput per level, the batching ceiling, and the targets.

Both servers are up for the whole run and are measured alternately, so a change in the machine's other load hits
both alike: at concurrency 1 every round runs one in-process call, one gRPC call and one HTTP call (rotating the
order); each higher level runs gRPC and HTTP back to back (alternating which goes first). The servers run in their
own processes so the load generator and the server do not share one GIL; on a 2-core machine they still share
the cores, which is part of what the figures show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.caption import report
from bench.caption.images import ImagePool
from bench.caption.limit import InProcess, measure_again, measure_limit
from bench.caption.load import measure_servers
from bench.caption.plan import Plan, make_plan
from bench.caption.stats import load_average
from bench.caption.targets import GrpcTarget, HttpTarget, Target
from imagewire_serving.launcher import ServerProcess

GRPC_NAME = "imagewire-captioner"
# The name bench.http_baseline announces (not imported from it: it loads torch before --torch-threads applies).
HTTP_NAME = "http-baseline"
# Loading a benchmark-size model on a busy CPU, twice at once, can take minutes.
SERVER_START_TIMEOUT_S = 900.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.caption_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter levels, no c=64")
    parser.add_argument("--model-preset", default="bench", help="captioner.tiny preset to build and serve")
    parser.add_argument("--device", default="cpu", help="device for all three paths (auto, cpu, cuda:N)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="caption length in every path")
    parser.add_argument("--batch-size", type=int, default=16, help="the limit's batch and the server's max batch")
    parser.add_argument("--max-batch-delay-ms", type=float, default=None, help="server batch delay (default: its own)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the generated PNGs")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per concurrency level > 1 (default: 15, or 5 with --quick, and at least "
                             "3 in-process batch times without --quick)")
    parser.add_argument("--concurrency", default=None, help="comma-separated levels (default 1,4,16,64)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="intra-op threads for all three paths (OMP_NUM_THREADS); default: torch's own choice")
    parser.add_argument("--skip-http", action="store_true", help="measure only the limit and the gRPC server")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def server_commands(model_dir: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    """The servers to run, by the name each announces; the launcher adds ``--port 0``."""
    grpc = [sys.executable, "-m", "captioner", "--model", str(model_dir), "--device", args.device,
            "--max-batch-size", str(args.batch_size), "--log-format", "json"]
    if args.max_batch_delay_ms is not None:
        grpc += ["--max-batch-delay-ms", str(args.max_batch_delay_ms)]
    http = [sys.executable, "-m", "bench.http_baseline", "--model", str(model_dir), "--device", args.device]
    return {GRPC_NAME: grpc} if args.skip_http else {GRPC_NAME: grpc, HTTP_NAME: http}


def start_servers(stack: contextlib.ExitStack, commands: dict[str, list[str]], grpc_log: list[str]
                  ) -> dict[str, ServerProcess]:
    """Start every server (stopped when ``stack`` closes) and wait until all are ready.

    They load at once and stay up, idle when not driven, so that they can be measured alternately.
    """
    servers = {
        name: stack.enter_context(ServerProcess.start(
            command, name=name, start_timeout_s=SERVER_START_TIMEOUT_S,
            # The captioner's JSON RPC log lines carry its own queue and model time for each request.
            on_stderr_line=grpc_log.append if name == GRPC_NAME else None,
        ))
        for name, command in commands.items()
    }
    for server in servers.values():
        server.wait_ready()
    return servers


async def serve_and_measure(commands: dict[str, list[str]], model: InProcess, pool: ImagePool, plan: Plan,
                            limit: dict[str, Any], max_new_tokens: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Run the servers and measure them; returns the results by target and the command line of each server."""
    grpc_log: list[str] = []
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, commands, grpc_log)
        targets: list[Target] = [GrpcTarget(servers[GRPC_NAME].target, max_new_tokens, grpc_log)]
        if HTTP_NAME in servers:
            targets.append(HttpTarget(servers[HTTP_NAME].target, max_new_tokens, max(plan.concurrency)))
        try:
            results = await measure_servers(targets, model, pool, plan, limit)
        finally:
            for target in targets:
                await target.close()
    return results, {name: " ".join(server.command[1:]) for name, server in servers.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark: the in-process limit, the servers side by side, the limit again, the comparison."""
    if args.torch_threads is not None:
        # Inherited by both server subprocesses; this process sets its own pool in InProcess. Set before torch
        # loads (InProcess imports it), as OpenMP reads it only then.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.torch_threads)
    from captioner import tiny

    plan = make_plan(args)
    started = time.perf_counter()
    model_dir = tiny.ensure_model(args.model_preset)
    pool = ImagePool(256, args.image_size)
    model = InProcess(model_dir, args.device, args.max_new_tokens, args.torch_threads)
    out: dict[str, Any] = {
        "machine": report.machine(model),
        "setup": report.setup(args.model_preset, tiny.PRESETS[args.model_preset], model_dir, model, pool, plan,
                              max_new_tokens=args.max_new_tokens, image_size=args.image_size),
    }
    limit = measure_limit(model, pool, plan.single_runs, plan.batch_runs, args.batch_size, warm_up=True)
    out["limit"] = limit
    results, out["setup"]["servers"] = await serve_and_measure(
        server_commands(model_dir, args), model, pool, plan, limit, args.max_new_tokens
    )
    if plan.limit_again:
        measure_again(model, pool, limit, args.batch_size)
    out.update(results)
    out["comparison"] = report.compare(limit, results["grpc"], results.get("http"))
    out["machine"]["load_average_end"] = load_average()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return report.emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    sys.exit(main())
