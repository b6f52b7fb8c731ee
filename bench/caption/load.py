"""The load generator: closed loops of callers, and the schedule that measures every target side by side.

Both servers are up for the whole run and are measured alternately, so a change in the machine's other load hits
both alike: at concurrency 1 every round runs one in-process call and one call to each server (rotating the
order); each higher level runs the servers back to back (alternating which goes first).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.caption.images import ImagePool
from bench.caption.limit import InProcess
from bench.caption.plan import Plan
from bench.caption.stats import LevelResult, latency_summary, level_summary
from bench.caption.targets import Target


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
                result.record_error(error)
                continue
            result.record(time.perf_counter() - sent, reply)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def latency_c1(
    targets: Sequence[Target], models: dict[str, InProcess], pool: ImagePool, rounds: int
) -> tuple[dict[str, LevelResult], dict[str, list[float]]]:
    """Concurrency 1: each round runs one in-process call per dtype (none where ``models`` is empty) and one call
    to each server, on fresh images.

    Other work on a shared machine drifts over seconds to minutes; taking them side by side, in a rotating order,
    makes their ratios fair to the instant.
    """
    for target in targets:
        await target.send(pool.take())  # warm each connection and server's first-request paths
    served = {target.name: LevelResult(1) for target in targets}
    direct: dict[str, list[float]] = {dtype: [] for dtype in models}
    steps: list[Target | InProcess] = [*models.values(), *targets]
    for round_ in range(rounds):
        for step in steps[round_ % len(steps):] + steps[: round_ % len(steps)]:
            if isinstance(step, InProcess):
                direct[step.dtype].append(await asyncio.to_thread(step.generate, pool.decoded(1)))
                continue
            image = pool.take()
            sent = time.perf_counter()
            reply = await step.send(image)
            served[step.name].record(time.perf_counter() - sent, reply)
    for result in served.values():
        result.elapsed_s = sum(result.latencies_s)  # a closed loop of one caller: the served calls' own time
    return served, direct


async def measure_servers(targets: Sequence[Target], models: dict[str, InProcess], pool: ImagePool, plan: Plan,
                          limits: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Latency at c=1 interleaved with in-process calls, then each concurrency level on every server in turn.

    Each server is compared with the in-process model and limit of its own dtype.
    """
    c1, direct = await latency_c1(targets, models, pool, plan.c1_rounds)
    results: dict[str, dict[str, Any]] = {
        t.name: {"dtype": t.dtype, "latency_c1": latency_summary(c1[t.name], t.server_times(),
                                                                 statistics.median(direct[t.dtype])),
                 "throughput": {}}
        for t in targets
    }
    longest_batch = max(max(limit["batch_seconds"]) for limit in limits.values())
    duration = max(plan.duration_s, plan.min_batches * longest_batch)
    for index, concurrency in enumerate(plan.concurrency):
        # Rotate which server goes first so that a steady drift in the machine's load favours none.
        for target in [*targets[index % len(targets):], *targets[: index % len(targets)]]:
            # c=1 throughput comes from the interleaved run: a closed loop of one caller is exactly that.
            level = c1[target.name] if concurrency == 1 else await closed_loop(target, pool, concurrency, duration)
            results[target.name]["throughput"][str(concurrency)] = level_summary(level, limits[target.dtype])
    return results
