"""The caption engine with a real tiny BLIP: work for callers who left is cut short."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import torch

from captioner.backend import BlipBackend
from captioner.engine import CaptionEngine, CaptionInput, EngineLimits
from imagewire_serving.metrics import Metrics
from tests.support import gated, solid

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def engine(tiny_caption_model: str) -> AsyncIterator[CaptionEngine]:
    backend = BlipBackend.load(tiny_caption_model, torch.device("cpu"), torch.float32)
    engine = CaptionEngine([backend], EngineLimits(max_batch_delay_s=0), Metrics())
    engine.start()
    yield engine
    await engine.close()


async def test_generation_stops_at_the_next_token_when_every_caller_left(engine: CaptionEngine) -> None:
    backend = engine.backends[0]
    captions: list[list[str]] = []
    original = backend.generate

    def recording(*args: object) -> list[str]:
        captions.append(original(*args))  # type: ignore[arg-type]
        return captions[-1]

    backend.generate = recording  # type: ignore[method-assign]
    try:
        # A full-length caption first, for comparison: with this prompt the random tiny model rambles on.
        request = CaptionInput(image=solid(), prompt="a picture of", max_new_tokens=60)
        full = await engine.caption(request)
        assert len(full.text.split()) > 20
        with gated(backend) as release:
            task = asyncio.create_task(engine.caption(request))
            await asyncio.sleep(0.2)  # queued, taken into a batch, held at the gate
            release.set()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        batcher = engine.batcher("")
        for _ in range(200):
            if batcher.batches_abandoned:
                break
            await asyncio.sleep(0.05)
    finally:
        backend.generate = original  # type: ignore[method-assign]
    assert batcher.batches_abandoned == 1 and batcher.batches_run == 1
    assert len(captions[1][0].split()) < 8, "generation went on for a caller that was gone"


async def test_callers_who_left_do_not_hold_queue_slots(tiny_caption_model: str) -> None:
    backend = BlipBackend.load(tiny_caption_model, torch.device("cpu"), torch.float32)
    engine = CaptionEngine([backend], EngineLimits(max_batch_delay_s=0, max_queue=2), Metrics())
    engine.start()
    try:
        with gated(backend) as release:
            running = asyncio.create_task(engine.caption(CaptionInput(image=solid())))
            await asyncio.sleep(0.2)  # taken by the worker, held at the gate
            queued = [asyncio.create_task(engine.caption(CaptionInput(image=solid((0, i, 0))))) for i in range(2)]
            await asyncio.sleep(0.1)
            for task in queued:
                task.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
            # Both slots are free again: this one is accepted, not refused as Overloaded.
            accepted = asyncio.create_task(engine.caption(CaptionInput(image=solid((0, 0, 9)))))
            await asyncio.sleep(0.1)
            assert not accepted.done()
            release.set()
            assert (await running).text and (await accepted).text
    finally:
        await engine.close()


async def test_a_lone_caller_skips_the_batch_window_but_concurrent_callers_are_batched(tiny_caption_model: str) -> None:
    backend = BlipBackend.load(tiny_caption_model, torch.device("cpu"), torch.float32)
    # A window far longer than any caption: waiting it out would show in every queue time.
    engine = CaptionEngine([backend], EngineLimits(max_batch_delay_s=2.0, default_max_new_tokens=4), Metrics())
    engine.start()
    try:
        for _ in range(3):
            alone = await engine.caption(CaptionInput(image=solid()))
            assert alone.batch_size == 1 and alone.queue_s < 0.5
        together = await asyncio.gather(*(engine.caption(CaptionInput(image=solid((i, 0, 0)))) for i in range(6)))
        assert max(r.batch_size for r in together) > 1
    finally:
        await engine.close()
