"""Every caption family end to end: its tiny random checkpoint loaded through from_pretrained and served over gRPC.

Per family: captions are words of the tiny vocabulary; eight concurrent calls with different images (of different
shapes, prompts mixed where the family takes them) get exactly their one-by-one captions, in fewer model calls;
a cancelled call stops its generation at the next step; running out of device memory is RESOURCE_EXHAUSTED and the
model serves on; a prompt filling the model's text length leaves room for the bound ListModels reports; the model
runs in bfloat16 too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
import torch
from imagewire.client import AsyncCaptionClient, ImagewireError

from captioner.backend import GenerationOptions
from captioner.engine import CaptionEngine
from captioner.families import load_captioner
from captioner.limits import EngineLimits
from captioner.tiny.words import WORDS
from imagewire_serving.images import decode_image
from imagewire_serving.server import GrpcServer
from tests.families import FAMILIES, CaptionFamily, family_params, family_server, model_dir, noise_pngs, prompts_of
from tests.gates import gate, wait_until
from tests.test_device_memory import OutOfMemory

on_the_session_loop = pytest.mark.asyncio(loop_scope="session")

MAX_NEW_TOKENS = 8


@dataclass(frozen=True)
class Served:
    """A family's tiny model served over gRPC, and the engine behind the server."""

    family: CaptionFamily
    server: GrpcServer

    @property
    def engine(self) -> CaptionEngine:
        return self.server.app.engine()

    def cancelled_calls(self) -> float:
        """Caption calls the server saw end because their caller left."""
        sample = self.server.metrics.registry.get_sample_value(
            "imagewire_requests_total", {"method": "/imagewire.caption.v1.CaptionService/Caption", "code": "CANCELLED"})
        return sample or 0.0


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=FAMILIES, ids=str)
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    # A generous batch window, so that concurrent calls from one client share a batch even on a loaded CPU.
    limits = EngineLimits(default_max_new_tokens=MAX_NEW_TOKENS, max_batch_size=16, max_batch_delay_ms=200)
    async with family_server(request.param, limits) as server:
        yield Served(request.param, server)


@on_the_session_loop
async def test_concurrent_calls_get_their_one_by_one_captions_made_of_words(served: Served) -> None:
    images, prompts = noise_pngs(seed=1), prompts_of(served.family)
    engine = served.engine
    async with AsyncCaptionClient(served.server.address, timeout=60) as client:
        alone = [await client.caption(image, prompt=prompt) for image, prompt in zip(images, prompts)]
        runs_before = engine.stats.runs_completed
        together = await asyncio.gather(*(client.caption(image, prompt=prompt)
                                          for image, prompt in zip(images, prompts)))
    texts = [caption.text for caption in alone]
    # The premise: captions depend on the image, so a mix-up between requests would show.
    assert len(set(texts)) >= 6, texts
    for text, prompt in zip(texts, prompts):
        assert text.startswith(prompt) and len(text.split()) > len(prompt.split()), (prompt, text)
        assert set(text.split()) <= set(WORDS), text
    assert {caption.batch_size for caption in alone} == {1}
    assert [caption.text for caption in together] == texts
    assert max(caption.batch_size for caption in together) > 1, "the server ran every call alone"
    assert engine.stats.runs_completed - runs_before < len(images)


@on_the_session_loop
async def test_a_cancelled_call_stops_its_generation_at_the_next_step(served: Served) -> None:
    engine = served.engine
    backend = engine.batcher("").backend
    image, prompt = noise_pngs(seed=2)[0], prompts_of(served.family)[1]
    async with AsyncCaptionClient(served.server.address, timeout=60) as client:
        steps_before = engine.stats.steps
        await client.caption(image, prompt=prompt, max_new_tokens=24)
        assert engine.stats.steps - steps_before > 4, "the premise: left alone, this caption takes many steps"
        stopped_before, cancelled_before = engine.stats.runs_stopped, served.cancelled_calls()
        with gate(backend) as held:
            call = asyncio.create_task(client.caption(image, prompt=prompt, max_new_tokens=24))
            await held.wait_entered()  # in a batch of its own, held before generation starts
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            # The server sees the caller go (its handler is cancelled) while the model is held.
            await wait_until(lambda: served.cancelled_calls() == cancelled_before + 1)
            steps_before = engine.stats.steps
            held.release()
            await wait_until(lambda: engine.stats.runs_stopped == stopped_before + 1)
    assert engine.stats.steps - steps_before <= 1, "generation went on for a caller that was gone"


@on_the_session_loop
async def test_a_prompt_filling_the_text_length_leaves_the_reported_room(served: Served,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    family, backend = served.family, served.engine.batcher("").backend
    image = decode_image(noise_pngs(seed=3)[4])
    prompt = " ".join(["a picture of"] * 8) if family.takes_prompts else ""
    budget = backend.token_budget(prompt)
    assert 0 < budget < backend.token_budget("") or not prompt
    # The end token held back, so generation runs to the whole budget: it must fit the model's positions.
    monkeypatch.setattr(backend.model.generation_config, "min_new_tokens", budget)
    (caption,) = backend.generate([image], [prompt], GenerationOptions(max_new_tokens=budget, num_beams=1))
    assert caption.startswith(prompt)


@family_params
def test_the_family_runs_in_bfloat16(family: CaptionFamily) -> None:
    backend = load_captioner(model_dir(family), torch.device("cpu"), torch.bfloat16)
    assert backend.family == family.name and backend.dtype is torch.bfloat16
    image = decode_image(noise_pngs(seed=4)[1])
    (caption,) = backend.generate([image], [""], GenerationOptions(max_new_tokens=MAX_NEW_TOKENS, num_beams=2))
    assert caption and set(caption.split()) <= set(WORDS)


@on_the_session_loop
async def test_out_of_memory_is_resource_exhausted_and_the_model_serves_on(served: Served) -> None:
    backend = served.engine.batcher("").backend
    image = noise_pngs(seed=5)[0]
    async with AsyncCaptionClient(served.server.address, timeout=60) as client:
        before = (await client.caption(image)).text
        failures = iter([True])
        # The real torch.OutOfMemoryError, raised once from inside the model (its input embeddings, which every
        # family's generate runs).
        hook = OutOfMemory(backend.model.get_input_embeddings(), lambda _: next(failures, False))
        try:
            with pytest.raises(ImagewireError) as caught:
                await client.caption(image)
            assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
            assert (await client.caption(image)).text == before
        finally:
            hook.remove()
    assert hook.batch_sizes, "the model never ran where the failure was installed"
