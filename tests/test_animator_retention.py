"""Finished jobs stay readable for --retention within --retention-bytes: eviction by time and by budget, NOT_FOUND
afterwards, and memory bounded over many jobs."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from animator.engine import AnimateEngine
from animator.events import Event, Result
from animator.families.svd import SvdBackend
from animator.limits import EngineLimits
from animator.params import AnimateInput
from imagewire_serving import errors
from imagewire_serving.metrics import Metrics
from tests.animator_support import tiny_backend
from tests.gates import wait_until
from tests.support import png

TINY = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1, "preview_every": 0}
BUDGET = 64 * 1024  # the smallest --retention-bytes


@pytest.fixture(scope="module")
def backend(one_torch_thread: None) -> SvdBackend:
    return tiny_backend()


@contextlib.asynccontextmanager
async def running(backend: SvdBackend, limits: EngineLimits) -> AsyncIterator[tuple[AnimateEngine, Metrics]]:
    metrics = Metrics()
    engine = AnimateEngine([backend], limits, metrics)
    engine.start()
    try:
        yield engine, metrics
    finally:
        await engine.close()


async def generate(engine: AnimateEngine, job_id: str, seed: int, **fields: object) -> list[Event]:
    image = png(Image.effect_noise((96, 64), 60).convert("RGB"))
    request = AnimateInput(image=image, job_id=job_id, seed=seed, **{**TINY, **fields})
    return [event async for event in engine.animate(request)]


def evictions(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("imagewire_job_evictions_total", {"reason": reason}) or 0.0


async def test_a_finished_job_expires_after_the_retention_period(backend: SvdBackend) -> None:
    async with running(backend, EngineLimits(retention=0.3)) as (engine, metrics):
        await generate(engine, "short-lived", 1)
        assert isinstance((await anext(engine.watch("short-lived"))), object)  # readable at first
        await wait_until(lambda: engine.jobs.find("short-lived") is None)
        with pytest.raises(errors.NotFound, match="'short-lived' is not on this server"):
            await anext(engine.watch("short-lived"))
        with pytest.raises(errors.NotFound):
            await engine.cancel("short-lived")
        assert evictions(metrics, "expired") == 1 and engine.jobs.retained_bytes == 0


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def test_fifty_jobs_stay_within_the_byte_budget_oldest_evicted_first(backend: SvdBackend) -> None:
    async with running(backend, EngineLimits(retention_bytes=BUDGET)) as (engine, metrics):
        await generate(engine, "warm", 0)  # the first generation's allocations are not the table's
        before = rss_bytes()
        most = 0
        for number in range(50):
            events = await generate(engine, f"job-{number}", number)
            assert isinstance(events[-1], Result)
            most = max(most, engine.jobs.retained_bytes)
        grown = rss_bytes() - before
        print(f"50 jobs, budget {BUDGET} B: at most {most} B retained, {len(engine.jobs)} jobs kept, "
              f"RSS grew {grown / 2**20:.1f} MiB")
        assert most <= BUDGET
        assert 1 < len(engine.jobs) < 50 and evictions(metrics, "budget") == 51 - len(engine.jobs)
        assert engine.jobs.find("job-49") is not None  # the newest stay
        with pytest.raises(errors.NotFound, match="'job-0'"):  # the oldest went first
            await anext(engine.watch("job-0"))
        assert grown < 32 * 2**20
        gauges = {state: metrics.registry.get_sample_value("imagewire_jobs", {"state": state})
                  for state in ("active", "detached", "retained")}
        assert gauges == {"active": 0, "detached": 0, "retained": len(engine.jobs)}
        assert metrics.registry.get_sample_value("imagewire_job_retained_bytes") == engine.jobs.retained_bytes


async def test_a_video_larger_than_the_budget_fails_as_resource_exhausted(backend: SvdBackend) -> None:
    async with running(backend, EngineLimits(retention_bytes=BUDGET)) as (engine, metrics):
        big = {"width": 256, "height": 256, "num_frames": 6, "decode_chunk_size": 1}
        stopped = engine.stats.runs_stopped
        with pytest.raises(errors.Overloaded, match="--retention-bytes"):
            await generate(engine, "too-big", 1, **big)
        assert engine.stats.runs_stopped == stopped + 1
        # Finished over the budget, it is dropped at once: its memory is free again.
        assert engine.jobs.find("too-big") is None and evictions(metrics, "budget") == 1
        assert engine.jobs.retained_bytes == 0
        assert isinstance((await generate(engine, "small", 2))[-1], Result)  # the worker goes on
