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
import collections
import contextlib
import io
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
from PIL import Image, ImageDraw

GRPC_NAME = "imagewire-captioner"
HTTP_NAME = "http-baseline"
# The targets: serving overhead at concurrency 1, and how much of the batched limit survives serving.
TARGET_C1_LATENCY_RATIO = 1.10
TARGET_C16_THROUGHPUT_RATIO = 0.8


@dataclass(frozen=True)
class Plan:
    """How much to measure; --quick shrinks every count."""

    single_runs: int
    batch_runs: int
    c1_rounds: int
    duration_s: float
    concurrency: tuple[int, ...]
    # Each level also lasts at least this many in-process batch times: a closed loop must see several batches
    # whatever the machine's speed, or one slow batch decides the figure.
    min_batches: float
    limit_again: bool


FULL = Plan(single_runs=7, batch_runs=2, c1_rounds=10, duration_s=15.0, concurrency=(1, 4, 16, 64), min_batches=3,
            limit_again=True)
QUICK = Plan(single_runs=3, batch_runs=1, c1_rounds=4, duration_s=5.0, concurrency=(1, 4, 16), min_batches=0,
             limit_again=False)


# ---------------------------------------------------------------------------------------------------- images


class ImagePool:
    """Distinct encoded PNGs (random shapes on noise), handed out round-robin so every batch sees different images.

    Made before any timing starts, so encoding costs the load generator nothing during a measurement.
    """

    def __init__(self, count: int, size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images: list[bytes] = [self._draw(rng, size) for _ in range(count)]
        self._next = 0

    @staticmethod
    def _draw(rng: np.random.Generator, size: int) -> bytes:
        # Noise keeps the PNG photo-sized (~100 KB at 224 px), so the transports carry realistic payloads.
        pixels = rng.integers(0, 64, (size, size, 3), dtype=np.uint8) + rng.integers(0, 192, 3, dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
            extent = int(rng.integers(size // 8, size // 3))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x0 + extent, y0 + extent), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    def take(self) -> bytes:
        image = self.images[self._next % len(self.images)]
        self._next += 1
        return image

    def decoded(self, count: int) -> list[Image.Image]:
        """The next ``count`` images decoded the way the servers decode them."""
        from imagewire_serving.images import decode_image

        return [decode_image(self.take()) for _ in range(count)]


# ---------------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


@dataclass
class Reply:
    """What one served request told the load generator."""

    request_id: str
    batch_size: int | None = None


@dataclass
class LevelResult:
    """One closed-loop run at a fixed concurrency."""

    concurrency: int
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    first_error: str | None = None

    def record(self, latency_s: float, reply: Reply) -> None:
        self.latencies_s.append(latency_s)
        self.replies.append(reply)
        self.requests += 1

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": round(self.throughput, 4),
            "latency_p50_s": round(percentile(self.latencies_s, 50), 4),
            "latency_p95_s": round(percentile(self.latencies_s, 95), 4),
        }
        sizes = [r.batch_size for r in self.replies if r.batch_size is not None]
        if sizes:
            # Per response, so a batch of 16 counts 16 times: the batch size the average request ran in.
            out["mean_batch_size"] = round(statistics.fmean(sizes), 2)
            out["batch_size_histogram"] = dict(sorted(collections.Counter(sizes).items()))
        if self.first_error:
            out["first_error"] = self.first_error
        return out


# ---------------------------------------------------------------------------------------------------- in-process


class InProcess:
    """The model called directly: the same loader, device, dtype and options the servers use."""

    def __init__(self, model_dir: Path, device_spec: str, max_new_tokens: int, threads: int | None) -> None:
        import torch

        from captioner.backend import BlipBackend, GenerationOptions
        from imagewire_serving.device import default_dtype, resolve_device

        if threads is not None:
            torch.set_num_threads(threads)  # the servers get the same through OMP_NUM_THREADS

        device = resolve_device(device_spec)
        self.backend = BlipBackend.load(str(model_dir), device, default_dtype(device))
        self.options = GenerationOptions(max_new_tokens=max_new_tokens, num_beams=1)
        self.torch_threads = torch.get_num_threads()

    def generate(self, images: list[Image.Image]) -> float:
        """Caption the images in one call; returns the seconds it took."""
        started = time.perf_counter()
        self.backend.generate(images, [""] * len(images), self.options)
        return time.perf_counter() - started

    def new_tokens(self, image: Image.Image) -> int:
        """How many tokens one greedy caption really generates: a random model may stop early at [SEP]."""
        import torch

        backend = self.backend
        inputs = backend.processor(images=[image], return_tensors="pt")  # type: ignore[operator]
        with torch.inference_mode():
            output = backend.model.generate(  # type: ignore[operator]
                pixel_values=inputs["pixel_values"].to(backend.device, backend.dtype),
                max_new_tokens=self.options.max_new_tokens, num_beams=1, do_sample=False,
            )
        return int(output.shape[1]) - 1  # the first column is the [DEC]/bos token, not generated


def measure_limit(model: InProcess, pool: ImagePool, singles: int, batches: int, batch_size: int,
                  *, warm_up: bool) -> dict[str, Any]:
    """The physical limit: one image at a time and whole batches, on distinct images."""
    if warm_up:
        model.generate(pool.decoded(1))
        model.generate(pool.decoded(batch_size))  # the first large batch allocates its buffers
    single_s = [model.generate(pool.decoded(1)) for _ in range(singles)]
    batch_s = [model.generate(pool.decoded(batch_size)) for _ in range(batches)]
    single_rps = len(single_s) / sum(single_s)
    batch_rps = batch_size * len(batch_s) / sum(batch_s)
    return {
        "single_latency_p50_s": round(statistics.median(single_s), 4),
        "single_latency_min_s": round(min(single_s), 4),
        "single_latency_max_s": round(max(single_s), 4),
        "single_throughput_rps": round(single_rps, 4),
        "batch_size": batch_size,
        "batch_seconds": [round(b, 3) for b in batch_s],
        "batch_throughput_rps": round(batch_rps, 4),
        "batching_gain": ratio(batch_rps, single_rps),
    }


# ---------------------------------------------------------------------------------------------------- servers


@dataclass
class ServerProcess:
    """A server subprocess started with --port 0; stdout lines are read by a thread, stderr goes to a log file."""

    name: str
    process: subprocess.Popen[str]
    log: TextIO
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    address: str = ""

    @classmethod
    def spawn(cls, name: str, command: list[str]) -> ServerProcess:
        log = tempfile.NamedTemporaryFile("w+", prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        server = cls(name, process, log)
        threading.Thread(target=server._pump, daemon=True).start()
        return server

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_ready(self, timeout_s: float = 900.0) -> None:
        """Learn the bound address from the announcement, then wait for the model to be loaded and warmed."""
        self.address = self._wait_for(f"{self.name} listening on", timeout_s).rsplit(" ", 1)[-1]
        self._wait_for(f"{self.name} ready", timeout_s)

    def _wait_for(self, fragment: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"{self.name} exited with {code}: {self.log_text()[-2000:]}") from None
                continue
            if fragment in line:
                return line
        raise TimeoutError(f"{self.name} printed no line containing {fragment!r} within {timeout_s}s")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class Target(Protocol):
    """A served captioner the load generator can drive."""

    name: str

    async def send(self, image: bytes) -> Reply:
        """Caption one encoded image; raises on any failure."""
        ...

    def server_times(self) -> dict[str, tuple[float, float]]:
        """Request id -> (queue seconds, model seconds) as the server measured them."""
        ...


class GrpcTarget:
    """The captioner through the typed asyncio client, one channel for every caller (HTTP/2 multiplexes them)."""

    name = "grpc"

    def __init__(self, server: ServerProcess, max_new_tokens: int) -> None:
        from imagewire.client import AsyncCaptionClient

        self._server = server
        self._client = AsyncCaptionClient(server.address, timeout=3600)
        self._max_new_tokens = max_new_tokens

    async def send(self, image: bytes) -> Reply:
        request_id = uuid.uuid4().hex
        caption = await self._client.caption(image, max_new_tokens=self._max_new_tokens, request_id=request_id)
        return Reply(request_id, caption.batch_size)

    def server_times(self) -> dict[str, tuple[float, float]]:
        # The server writes one JSON log line per RPC (--log-format json) with its queue and model time.
        times: dict[str, tuple[float, float]] = {}
        for line in self._server.log_text().splitlines():
            if not line.startswith("{"):
                continue
            rpc = json.loads(line).get("rpc")
            if isinstance(rpc, dict) and "compute_ms" in rpc:
                times[rpc["request_id"]] = (rpc["queue_ms"] / 1000, rpc["compute_ms"] / 1000)
        return times

    async def close(self) -> None:
        await self._client.close()


class HttpTarget:
    """The baseline through httpx with a connection per caller, as a multipart form."""

    name = "http"

    def __init__(self, server: ServerProcess, max_new_tokens: int, connections: int) -> None:
        import httpx

        from bench.http_baseline import COMPUTE_HEADER

        self._compute_header = COMPUTE_HEADER
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = httpx.AsyncClient(base_url=f"http://{server.address}", timeout=3600, limits=limits)
        self._max_new_tokens = str(max_new_tokens)
        self._times: dict[str, tuple[float, float]] = {}

    async def send(self, image: bytes) -> Reply:
        response = await self._client.post(
            "/image-to-text",
            files={"image": ("image.png", image, "image/png")},
            data={"max_new_tokens": self._max_new_tokens},
        )
        response.raise_for_status()
        if not isinstance(response.json().get("text"), str):
            raise ValueError(f"malformed answer: {response.text[:200]}")
        request_id = uuid.uuid4().hex
        compute_ms = response.headers.get(self._compute_header)  # so its transport overhead can be isolated
        if compute_ms is not None:
            self._times[request_id] = (0.0, float(compute_ms) / 1000)
        return Reply(request_id)

    def server_times(self) -> dict[str, tuple[float, float]]:
        return self._times

    async def close(self) -> None:
        await self._client.aclose()


# ---------------------------------------------------------------------------------------------------- driving


async def closed_loop(target: Target, pool: ImagePool, concurrency: int, duration_s: float) -> LevelResult:
    """``concurrency`` callers each send a request as soon as their previous one returns, for ``duration_s``.

    Requests in flight at the end are let finish and counted, so throughput is completed requests over the time
    from the first send to the last answer: the ramp-up and the drain are inside the window, never a partial batch
    cut off at an arbitrary instant (a batch of 16 can take seconds on a CPU).
    """
    result = LevelResult(concurrency)
    started = time.perf_counter()
    stop_at = started + duration_s

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            image = pool.take()
            sent = time.perf_counter()
            try:
                reply = await target.send(image)
            except Exception as error:  # counted, not fatal: an overloaded server is a result too
                result.errors += 1
                result.first_error = result.first_error or f"{type(error).__name__}: {error}"
                continue
            result.record(time.perf_counter() - sent, reply)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def latency_c1(
    targets: Sequence[Target], model: InProcess, pool: ImagePool, rounds: int
) -> tuple[dict[str, LevelResult], list[float]]:
    """Concurrency 1: each round runs one in-process call and one call to each server, on fresh images.

    Other work on a shared machine drifts over seconds to minutes; taking the three side by side, in a rotating
    order, makes their ratios fair to the instant.
    """
    for target in targets:
        await target.send(pool.take())  # warm each connection and server's first-request paths
    served = {target.name: LevelResult(1) for target in targets}
    direct: list[float] = []
    steps: list[Target | None] = [None, *targets]  # None: the in-process call
    for round_ in range(rounds):
        for step in steps[round_ % len(steps):] + steps[: round_ % len(steps)]:
            if step is None:
                direct.append(await asyncio.to_thread(model.generate, pool.decoded(1)))
                continue
            image = pool.take()
            sent = time.perf_counter()
            reply = await step.send(image)
            served[step.name].record(time.perf_counter() - sent, reply)
    for result in served.values():
        result.elapsed_s = sum(result.latencies_s)  # a closed loop of one caller: the served calls' own time
    return served, direct


def latency_summary(result: LevelResult, times: dict[str, tuple[float, float]], direct_p50: float) -> dict[str, Any]:
    p50 = percentile(result.latencies_s, 50)
    summary: dict[str, Any] = {
        "p50_s": round(p50, 4),
        "p95_s": round(percentile(result.latencies_s, 95), 4),
        "inprocess_p50_s": round(direct_p50, 4),
        "ratio_p50_to_inprocess": ratio(p50, direct_p50),
        "requests": result.requests,
    }
    matched = [(latency, times[reply.request_id]) for latency, reply in zip(result.latencies_s, result.replies)
               if reply.request_id in times]
    if matched:
        # Latency minus the server's own model time: what serving adds, free of the model time's noise.
        overhead = statistics.median(latency - compute for latency, (_, compute) in matched)
        summary["server_compute_p50_s"] = round(statistics.median(compute for _, (_, compute) in matched), 4)
        summary["overhead_p50_ms"] = round(overhead * 1000, 2)
        summary["queue_p50_ms"] = round(statistics.median(queued for _, (queued, _) in matched) * 1000, 2)
        summary["ratio_from_overhead"] = ratio(direct_p50 + overhead, direct_p50)
    return summary


def level_summary(result: LevelResult, limit: dict[str, Any]) -> dict[str, Any]:
    summary = result.summary()
    summary["ratio_to_batch_limit"] = ratio(result.throughput, limit["batch_throughput_rps"])
    summary["ratio_to_single_limit"] = ratio(result.throughput, limit["single_throughput_rps"])
    return summary


async def measure_servers(targets: Sequence[Target], model: InProcess, pool: ImagePool, plan: Plan,
                          limit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Latency at c=1 interleaved with in-process calls, then each concurrency level on every server in turn."""
    c1, direct = await latency_c1(targets, model, pool, plan.c1_rounds)
    direct_p50 = statistics.median(direct)
    results: dict[str, dict[str, Any]] = {
        t.name: {"latency_c1": latency_summary(c1[t.name], t.server_times(), direct_p50), "throughput": {}}
        for t in targets
    }
    duration = max(plan.duration_s, plan.min_batches * max(limit["batch_seconds"]))
    for index, concurrency in enumerate(plan.concurrency):
        # Alternate which server goes first so that a steady drift in the machine's load favours neither.
        for target in targets if index % 2 == 0 else list(reversed(targets)):
            # c=1 throughput comes from the interleaved run: a closed loop of one caller is exactly that.
            level = c1[target.name] if concurrency == 1 else await closed_loop(target, pool, concurrency, duration)
            results[target.name]["throughput"][str(concurrency)] = level_summary(level, limit)
    return results


def compare(limit: dict[str, Any], grpc: dict[str, Any], http: dict[str, Any] | None) -> dict[str, Any]:
    per_level = {
        level: ratio(grpc["throughput"][level]["throughput_rps"], http["throughput"][level]["throughput_rps"])
        for level in grpc["throughput"]
        if http is not None and level in http["throughput"]
    }
    c1 = grpc["latency_c1"]
    c16 = grpc["throughput"].get("16", {}).get("ratio_to_batch_limit")
    return {
        "grpc_over_http_throughput": per_level,
        "batching_gain_ceiling": limit["batching_gain"],
        "targets": {
            "c1_latency_ratio": {
                "value": c1["ratio_p50_to_inprocess"],
                "value_from_overhead": c1.get("ratio_from_overhead"),
                "max": TARGET_C1_LATENCY_RATIO,
                "met": c1["ratio_p50_to_inprocess"] is not None
                and c1["ratio_p50_to_inprocess"] <= TARGET_C1_LATENCY_RATIO,
            },
            "c16_throughput_ratio_to_batch_limit": {
                "value": c16,
                "min": TARGET_C16_THROUGHPUT_RATIO,
                "met": c16 is not None and c16 >= TARGET_C16_THROUGHPUT_RATIO,
            },
        },
    }


# ---------------------------------------------------------------------------------------------------- main


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


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.duration is not None:
        plan = replace(plan, duration_s=args.duration, min_batches=0)
    if args.concurrency:
        plan = replace(plan, concurrency=tuple(sorted({int(v) for v in args.concurrency.split(",")} | {1})))
    return plan


def server_commands(model_dir: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    grpc = [sys.executable, "-m", "captioner", "--model", str(model_dir), "--port", "0", "--device", args.device,
            "--max-batch-size", str(args.batch_size), "--log-format", "json"]
    if args.max_batch_delay_ms is not None:
        grpc += ["--max-batch-delay-ms", str(args.max_batch_delay_ms)]
    http = [sys.executable, "-m", "bench.http_baseline", "--model", str(model_dir), "--port", "0",
            "--device", args.device]
    return {GRPC_NAME: grpc} if args.skip_http else {GRPC_NAME: grpc, HTTP_NAME: http}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.torch_threads is not None:
        # Inherited by both server subprocesses; this process sets its own pool in InProcess.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.torch_threads)
    from captioner import tiny

    plan = make_plan(args)
    started = time.perf_counter()
    model_dir = tiny.ensure_model(args.model_preset)
    pool = ImagePool(256, args.image_size)
    model = InProcess(model_dir, args.device, args.max_new_tokens, args.torch_threads)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": model.torch_threads,
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_start": load_average(),
        },
        "setup": {
            "model_preset": args.model_preset,
            "preset": asdict(tiny.PRESETS[args.model_preset]),
            "model_dir": str(model_dir),
            "device": str(model.backend.device),
            "dtype": model.backend.dtype_name,
            "max_new_tokens": args.max_new_tokens,
            "new_tokens_generated": model.new_tokens(pool.decoded(1)[0]),
            "num_beams": 1,
            "image": f"{args.image_size}x{args.image_size} PNG, ~{sum(map(len, pool.images)) // len(pool.images)} B",
            "plan": asdict(plan),
        },
    }
    commands = server_commands(model_dir, args)
    report["setup"]["servers"] = {name: " ".join(command[1:]) for name, command in commands.items()}
    limit = measure_limit(model, pool, plan.single_runs, plan.batch_runs, args.batch_size, warm_up=True)
    report["limit"] = limit
    with contextlib.ExitStack() as stack:
        # Both servers load at once (and stay up, idle when not driven) so that they can be measured alternately.
        servers = {}
        for name, command in commands.items():
            servers[name] = server = ServerProcess.spawn(name, command)
            stack.callback(server.stop)
        for server in servers.values():
            server.wait_ready()
        targets: list[Any] = [GrpcTarget(servers[GRPC_NAME], args.max_new_tokens)]
        if HTTP_NAME in servers:
            targets.append(HttpTarget(servers[HTTP_NAME], args.max_new_tokens, max(plan.concurrency)))
        try:
            results = await measure_servers(targets, model, pool, plan, limit)
        finally:
            for target in targets:
                await target.close()
    if plan.limit_again:
        again = measure_limit(model, pool, 3, 1, args.batch_size, warm_up=False)
        limit["at_end"] = again
        limit["drift_batch_throughput"] = ratio(again["batch_throughput_rps"], limit["batch_throughput_rps"])
    report.update(results)
    report["comparison"] = compare(limit, results["grpc"], results.get("http"))
    report["machine"]["load_average_end"] = load_average()
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
