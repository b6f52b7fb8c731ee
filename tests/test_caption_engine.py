"""The caption engine with a real tiny BLIP: work for callers who left is cut short, queue slots are freed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import torch
from PIL import Image

from captioner.backend import GenerationOptions
from captioner.batcher import Captioned
from captioner.engine import CaptionEngine, CaptionInput
from captioner.families import load_captioner
from captioner.limits import EngineLimits
from imagewire_serving.metrics import Metrics
from tests.gates import gate, wait_until
from tests.support import solid

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def engine(tiny_caption_model: str) -> AsyncIterator[CaptionEngine]:
    backend = load_captioner(tiny_caption_model, torch.device("cpu"), torch.float32)
    engine = CaptionEngine([backend], EngineLimits(max_batch_delay_ms=0, max_queue=2), Metrics())
    engine.start()
    yield engine
    await engine.close()


async def test_generation_stops_at_the_next_token_when_every_caller_left(engine: CaptionEngine) -> None:
    backend = engine.backends[0]
    # A full-length caption first, for comparison: with this prompt the random tiny model rambles on.
    request = CaptionInput(image=solid(), prompt="a picture of", max_new_tokens=60)
    full = await engine.caption(request)
    assert len(full.text.split()) > 20
    steps_of_full = engine.stats.steps
    with gate(backend) as held:
        task = asyncio.create_task(engine.caption(request))
        await held.wait_entered()  # queued, taken into a batch, held at the gate
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        steps_before = engine.stats.steps
        held.release()
        await wait_until(lambda: engine.stats.runs_stopped == 1)
    assert engine.stats.runs_completed == 1 and engine.stats.requests_completed == 1
    assert engine.stats.steps - steps_before < 8 < steps_of_full, "generation went on for a caller that was gone"


async def test_callers_who_left_do_not_hold_queue_slots(engine: CaptionEngine) -> None:
    with gate(engine.backends[0]) as held:
        running = asyncio.create_task(engine.caption(CaptionInput(image=solid())))
        await held.wait_entered()  # taken by the worker, held at the gate
        queued = [asyncio.create_task(engine.caption(CaptionInput(image=solid((0, i, 0))))) for i in range(2)]
        await wait_until(lambda: engine.queue_depth == 2)
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        # Both slots are free again: this one is accepted (queued behind the gate), not refused as Overloaded.
        accepted = asyncio.create_task(engine.caption(CaptionInput(image=solid((0, 0, 9)))))
        await wait_until(lambda: engine.queue_depth == 1)
        assert not accepted.done()
        held.release()
        assert (await running).text and (await accepted).text


async def test_a_lone_caller_skips_the_batch_window_but_concurrent_callers_are_batched(tiny_caption_model: str) -> None:
    backend = load_captioner(tiny_caption_model, torch.device("cpu"), torch.float32)
    # A window far longer than any caption: waiting it out would show in every queue time.
    engine = CaptionEngine([backend], EngineLimits(max_batch_delay_ms=2000, default_max_new_tokens=4), Metrics())
    engine.start()
    try:
        for _ in range(3):
            alone = await engine.caption(CaptionInput(image=solid()))
            assert alone.batch_size == 1 and alone.queue_s < 0.5
        together = await asyncio.gather(*(engine.caption(CaptionInput(image=solid((i, 0, 0)))) for i in range(6)))
        assert max(r.batch_size for r in together) > 1
    finally:
        await engine.close()


async def test_a_batch_waits_for_the_callers_the_last_batch_answered(tiny_caption_model: str) -> None:
    """Closed-loop callers come back a little after the batch window; the next batch waits for them rather than
    splitting the load into two batches that would alternate from then on. Requests go straight to the batcher
    (already decoded), so which of them arrive together depends on no thread's timing."""
    backend = load_captioner(tiny_caption_model, torch.device("cpu"), torch.float32)
    engine = CaptionEngine([backend], EngineLimits(max_batch_delay_ms=5, default_max_new_tokens=4), Metrics())
    engine.start()
    batcher = engine.batcher("")
    options = GenerationOptions(max_new_tokens=4, num_beams=1)

    def submit(colour: tuple[int, int, int]) -> asyncio.Task[Captioned]:
        return asyncio.create_task(batcher.submit(Image.new("RGB", (64, 48), colour), "", options, None))

    try:
        with gate(backend) as held:
            first = [submit((i, 0, 0)) for i in range(4)]  # all four queue before the worker wakes
            await held.wait_entered()
            queued = [submit((0, i, 0)) for i in range(2)]
            await wait_until(lambda: batcher.queue_depth == 2)
            # The batch of four is held long enough that the wait for returning callers (a fraction of the last
            # batch's time) is far longer than their return below.
            await asyncio.sleep(1.2)
            held.release()
            assert {result.batch_size for result in await asyncio.gather(*first)} == {4}
        # The four answered callers come back 50 ms later: ten batch windows, well within the patience.
        await asyncio.sleep(0.05)
        returned = [submit((0, 0, i)) for i in range(4)]
        results = await asyncio.gather(*queued, *returned)
        assert {result.batch_size for result in results} == {6}
    finally:
        await engine.close()
