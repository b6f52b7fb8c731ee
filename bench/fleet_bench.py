"""Fleet benchmark: what the Envoy front door costs against direct calls, and what a replica's death costs.

    python -m bench.fleet_bench [--quick] [--model-preset bench] [--torch-threads N] [--out FILE]

Every figure comes from this one run, side by side:

- ``envoy_cost``: the same captioner replica (a ``captioner.tiny`` preset, ``bench`` by default) called directly
  and through Envoy (``deploy/envoy/envoy.template.yaml``, rendered for loopback), with the same typed asyncio
  client and the same images. At concurrency 1 each round makes one call of each, in a rotating order (p50
  latency ratio, target <= 1.05); at concurrency 16 closed loops run in pairs, direct and Envoy back to back,
  alternating which goes first (the throughput ratio is the median of the pairs' ratios, target >= 0.95).
- ``failover``: three replicas of the ``tiny`` preset; closed loops through Envoy and through the client's own
  balancing (an ``ipv4:`` target) at once; one replica SIGKILLed a third of the way in. The figure is the calls
  lost on each path (target 0), with what absorbed the failure (Envoy's retries).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import output
from bench.caption.images import ImagePool
from bench.caption.load import closed_loop, latency_c1
from bench.caption.stats import LevelResult, load_average, percentile, ratio
from bench.caption.targets import GrpcTarget
from imagewire_serving.frontdoor import Envoy, FrontDoor
from imagewire_serving.launcher import ServerProcess

NAME = "imagewire-captioner"
CAPTION = "/imagewire.caption.v1.CaptionService/Caption"
START_TIMEOUT_S = 900.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter loops")
    parser.add_argument("--model-preset", default="bench", help="captioner.tiny preset of the Envoy-cost replica")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="caption length")
    parser.add_argument("--rounds", type=int, default=None, help="c=1 rounds (default 30, --quick 8)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per c=16 loop (default 30: several batches of the bench model; --quick 8)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="c=16 loop pairs, direct and Envoy back to back (default 4, --quick 1)")
    parser.add_argument("--failover-duration", type=float, default=None,
                        help="seconds of failover traffic (default 30, --quick 12)")
    parser.add_argument("--envoy-concurrency", type=int, default=1, help="Envoy's worker threads")
    parser.add_argument("--torch-threads", type=int, default=None, help="OMP_NUM_THREADS of the replicas")
    output.add_out(parser)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (8 if args.quick else 30)
    args.duration = args.duration or (8.0 if args.quick else 30.0)
    args.pairs = args.pairs or (1 if args.quick else 4)
    args.failover_duration = args.failover_duration or (12.0 if args.quick else 30.0)
    return args


def start_replica(stack: contextlib.ExitStack, model_dir: Path, log: list[str]) -> ServerProcess:
    command = [sys.executable, "-m", "captioner", "--model", str(model_dir), "--device", "cpu",
               "--max-batch-size", "16", "--log-format", "json"]
    return stack.enter_context(ServerProcess.start(command, name=NAME, start_timeout_s=START_TIMEOUT_S,
                                                   on_stderr_line=log.append))


def start_envoy(stack: contextlib.ExitStack, replicas: list[ServerProcess], concurrency: int) -> Envoy:
    front = FrontDoor(captioners=[replica.target for replica in replicas], animators=(), health_interval_s=1.0)
    envoy = stack.enter_context(Envoy.start(front, concurrency=concurrency))
    envoy.wait_healthy("captioner", len(replicas))
    return envoy


async def envoy_cost(args: argparse.Namespace, model_dir: Path, pool: ImagePool) -> dict[str, Any]:
    """One replica, called directly and through Envoy, side by side."""
    log: list[str] = []
    with contextlib.ExitStack() as stack:
        replica = start_replica(stack, model_dir, log)
        replica.wait_ready()
        envoy = start_envoy(stack, [replica], args.envoy_concurrency)
        direct = GrpcTarget("direct", replica.target, args.max_new_tokens, log)
        proxied = GrpcTarget("envoy", envoy.target, args.max_new_tokens, log, health_check=False)
        try:
            c1, _ = await latency_c1([direct, proxied], {}, pool, args.rounds)
            loops: dict[str, list[LevelResult]] = {"direct": [], "envoy": []}
            for pair in range(args.pairs):
                # Alternating which goes first: AB BA AB ... so a steady drift favours neither.
                for target in (direct, proxied) if pair % 2 == 0 else (proxied, direct):
                    loops[target.name].append(await closed_loop(target, pool, 16, args.duration))
        finally:
            await direct.close()
            await proxied.close()
    latency = {name: round(percentile(result.latencies_s, 50), 4) for name, result in c1.items()}
    throughput = {name: round(statistics.fmean(r.throughput for r in results), 4) for name, results in loops.items()}
    latency_ratio = ratio(latency["envoy"], latency["direct"])
    # Each pair's two loops ran back to back: their ratio is fair to the machine's load at that moment.
    pair_ratios = [ratio(e.throughput, d.throughput) for d, e in zip(loops["direct"], loops["envoy"])]
    throughput_ratio = statistics.median(r for r in pair_ratios if r is not None)
    return {
        "latency_c1_p50_s": latency,
        "latency_c1_p95_s": {name: round(percentile(r.latencies_s, 95), 4) for name, r in c1.items()},
        "latency_c1_added_ms": round((latency["envoy"] - latency["direct"]) * 1000, 2),
        "throughput_c16_rps": throughput,
        "throughput_c16_pair_ratios": pair_ratios,
        "errors": {name: sum(r.errors for r in results) for name, results in loops.items()},
        "ratio_latency_c1_p50": latency_ratio,
        "ratio_throughput_c16": round(throughput_ratio, 3),
        "targets": {
            "latency_c1_p50 <= 1.05": latency_ratio is not None and latency_ratio <= 1.05,
            "throughput_c16 >= 0.95": throughput_ratio is not None and throughput_ratio >= 0.95,
        },
    }


async def failover(args: argparse.Namespace, model_dir: Path, pool: ImagePool) -> dict[str, Any]:
    """Three replicas; traffic through Envoy and direct at once; one replica SIGKILLed a third of the way in."""
    logs: list[list[str]] = [[], [], []]
    with contextlib.ExitStack() as stack:
        replicas = [start_replica(stack, model_dir, log) for log in logs]
        for replica in replicas:
            replica.wait_ready()
        envoy = start_envoy(stack, replicas, args.envoy_concurrency)
        direct = GrpcTarget("direct", "ipv4:" + ",".join(r.target for r in replicas), args.max_new_tokens, [])
        proxied = GrpcTarget("envoy", envoy.target, args.max_new_tokens, [], health_check=False)
        try:
            loops = [asyncio.create_task(closed_loop(t, pool, 8, args.failover_duration)) for t in (direct, proxied)]
            await asyncio.sleep(args.failover_duration / 3)
            served_before = [sum(CAPTION in line for line in log) for log in logs]
            replicas[0].process.send_signal(signal.SIGKILL)
            results = dict(zip(("direct", "envoy"), await asyncio.gather(*loops)))
            retries = envoy.counter("cluster.captioner.upstream_rq_retry")
        finally:
            await direct.close()
            await proxied.close()
    return {
        "replicas": len(replicas),
        "calls_served_by_each_replica_before_the_kill": served_before,
        "seconds_of_traffic_after_the_kill": round(args.failover_duration * 2 / 3, 1),
        "calls": {name: r.requests for name, r in results.items()},
        "calls_lost": {name: r.errors for name, r in results.items()},
        "first_error": {name: r.first_error for name, r in results.items() if r.first_error},
        "envoy_retries": retries,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.torch_threads is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.torch_threads)
    from captioner import tiny

    started = time.perf_counter()
    pool = ImagePool(256, 224)
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_average_start": load_average()},
        "setup": {"cost_model_preset": args.model_preset, "failover_model_preset": "tiny",
                  "max_new_tokens": args.max_new_tokens, "c1_rounds": args.rounds, "c16_loop_s": args.duration,
                  "c16_pairs": args.pairs,
                  "envoy_concurrency": args.envoy_concurrency,
                  "omp": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}},
    }
    out["envoy_cost"] = await envoy_cost(args, tiny.ensure_model(args.model_preset), pool)
    out["failover"] = await failover(args, tiny.ensure_model("tiny"), pool)
    out["machine"]["load_average_end"] = load_average()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return output.emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    sys.exit(main())
