"""Dynamic batching in the captioner: no mix-ups, per-request prompts, queue bounds, dropped expired/cancelled work.

The engine tests drive :class:`CaptionEngine` directly; the service tests go through a real grpc.aio server on
port 0 and the typed client. Both run the real BLIP code. Where a test must hold the device worker (to fill the
queue deterministically) it wraps the real backend's ``generate`` in a :class:`Gate`, which also records every
image the model was given, so "never reached the model" is checked against what the model actually saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
import torch
from imagewire.client import AsyncCaptionClient, Caption, ImagewireError
from PIL import Image

from captioner import tiny
from captioner.app import CaptionerApp
from captioner.backend import GenerationOptions
from captioner.batcher import Batcher
from captioner.engine import CaptionEngine, CaptionInput
from captioner.families import load_captioner
from captioner.families.blip import BlipCaptioner
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving import errors
from imagewire_serving.images import decode_image
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.gates import Gate, gate, wait_until
from tests.support import png, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_NEW_TOKENS = 8
# Prompts made of vocabulary words, so the decoded caption repeats them verbatim.
PROMPTS = ["", "a picture of", "two", "", "a red", "", "there is", ""]
CAPTION_METHOD = "/imagewire.caption.v1.CaptionService/Caption"


# ------------------------------------------------------------------------------------------------------ helpers


def fingerprint(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def seen(held: Gate) -> set[str]:
    """Fingerprints of every image the gated generate was given."""
    return {fingerprint(image) for images, *_ in held.calls for image in images}


def noise_pngs(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))) for _ in range(count)]


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset with an image pathway strong enough that different images get different captions.

    BLIP's vision config initialises its weights with std 1e-10, so a random tiny BLIP captions every image the
    same way and a mix-up between requests would go unnoticed. Re-drawing the vision weights at std 0.02 and
    amplifying the decoder's cross-attention makes the caption a function of the image; the model is saved and
    loaded back through from_pretrained like any other.
    """
    from transformers import BlipForConditionalGeneration, BlipProcessor

    source = tiny.ensure_model("tiny")
    model = BlipForConditionalGeneration.from_pretrained(source).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.vision_model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        for name, parameter in model.text_decoder.named_parameters():
            if "crossattention" in name and name.endswith(("value.weight", "output.dense.weight")):
                parameter.mul_(10.0)
    out = tmp_path_factory.mktemp("image-sensitive-blip")
    model.save_pretrained(out)
    BlipProcessor.from_pretrained(source).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> BlipCaptioner:
    loaded = load_captioner(str(model_dir), torch.device("cpu"), torch.float32)
    assert isinstance(loaded, BlipCaptioner)
    return loaded


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return noise_pngs(16, seed=1)


@pytest.fixture(scope="module")
def prompts(images: list[bytes]) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(len(images))]


@pytest.fixture(scope="module")
def one_by_one(backend: BlipCaptioner, images: list[bytes], prompts: list[str]) -> list[str]:
    """Each image captioned alone, straight through the backend: what every batched answer must equal."""
    options = GenerationOptions(max_new_tokens=MAX_NEW_TOKENS, num_beams=1)
    return [backend.generate([decode_image(data)], [prompt], options)[0] for data, prompt in zip(images, prompts)]


@pytest_asyncio.fixture(loop_scope="session")
async def engine(backend: BlipCaptioner) -> AsyncIterator[CaptionEngine]:
    limits = EngineLimits(default_max_new_tokens=MAX_NEW_TOKENS, max_batch_size=16, max_batch_delay_ms=200,
                          max_queue=16)
    engine = CaptionEngine([backend], limits, Metrics())
    engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(model_dir: Path) -> AsyncIterator[GrpcServer]:
    settings = CaptionerSettings(
        server=ServerSettings(port=0, models=(str(model_dir),)),
        # A generous delay so concurrent calls from one test client reliably share a batch even on a loaded CPU.
        limits=EngineLimits(default_max_new_tokens=MAX_NEW_TOKENS, max_batch_size=16, max_batch_delay_ms=200,
                            max_queue=16),
    )
    metrics = Metrics()
    async with serving(CaptionerApp(settings, metrics), metrics, settings.server) as running:
        yield running


def batcher_of(server: GrpcServer) -> Batcher:
    app = server.app
    assert isinstance(app, CaptionerApp)
    return app.engine().batcher("")


def ended_calls(server: GrpcServer, code: str) -> float:
    """Caption calls the server saw end with ``code`` (CANCELLED: caller gone; DEADLINE_EXCEEDED: time ran out)."""
    value = server.metrics.registry.get_sample_value(
        "imagewire_requests_total", {"method": CAPTION_METHOD, "code": code}
    )
    return value or 0.0


@pytest.fixture(scope="module")
def check_model(one_by_one: list[str]) -> Iterator[None]:
    # Guard the premise of the mix-up tests: with identical captions they would prove nothing.
    assert len(set(one_by_one)) >= 12, one_by_one
    yield


# ------------------------------------------------------------------------------------------------------ engine


async def test_engine_batches_concurrent_requests_without_mixups(
    engine: CaptionEngine, images: list[bytes], prompts: list[str], one_by_one: list[str], check_model: None
) -> None:
    results = await asyncio.gather(
        *(engine.caption(CaptionInput(image=data, prompt=prompt)) for data, prompt in zip(images, prompts))
    )
    assert [r.text for r in results] == one_by_one
    assert max(r.batch_size for r in results) > 1, "the batcher ran every request alone"
    assert engine.stats.requests_completed == len(images) and engine.stats.runs_completed < len(images)


async def test_engine_mixed_prompt_batch_keeps_each_prompt(
    engine: CaptionEngine, images: list[bytes], prompts: list[str], one_by_one: list[str], check_model: None,
) -> None:
    batcher = engine.batcher("")
    with gate(batcher.backend) as held:
        blocker = asyncio.create_task(engine.caption(CaptionInput(image=noise_pngs(1, seed=99)[0])))
        await held.wait_entered()
        tasks = [asyncio.create_task(engine.caption(CaptionInput(image=d, prompt=p))) for d, p in zip(images, prompts)]
        await wait_until(lambda: batcher.queue_depth == len(images))
        held.release()
        results = await asyncio.gather(*tasks)
        await blocker
    # All 16 waited together, so they ran as one batch holding five different prompts.
    assert {r.batch_size for r in results} == {len(images)}
    for result, prompt, expected in zip(results, prompts, one_by_one):
        assert result.text.startswith(prompt), (prompt, result.text)
        assert result.text == expected


def stock_generate(backend: BlipCaptioner, images: list[Image.Image], prompt: str, options: GenerationOptions
                   ) -> list[str]:
    """BLIP's own path for one prompt: the processor, then the model's generate, as its model card shows."""
    processor = backend.processor
    text = {"text": [prompt] * len(images)} if prompt else {}
    inputs = processor(images=images, return_tensors="pt", **text)
    with torch.inference_mode():
        output = backend.model.generate(**inputs, max_new_tokens=options.max_new_tokens,
                                        num_beams=options.num_beams, do_sample=False)
    return [" ".join(t.split()) for t in processor.batch_decode(output, skip_special_tokens=True)]


@pytest.mark.parametrize("num_beams", [1, 2])
async def test_one_generate_for_mixed_prompts_gives_the_stock_captions_of_each_prompt(
    backend: BlipCaptioner, images: list[bytes], num_beams: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prompts of every length, up to one that leaves only the new tokens of the model's text length.
    longest = " ".join(["a picture of"] * 20)
    longest = " ".join(longest.split()[: backend.token_budget("") - MAX_NEW_TOKENS - 1])
    mixed = [*PROMPTS, longest]
    decoded = [decode_image(data) for data in images[: len(mixed)]]
    options = GenerationOptions(max_new_tokens=MAX_NEW_TOKENS, num_beams=num_beams)
    expected = [stock_generate(backend, [image], prompt, options)[0] for image, prompt in zip(decoded, mixed)]
    calls: list[int] = []
    model_generate = backend.model.generate
    monkeypatch.setattr(backend.model, "generate", lambda **kw: calls.append(1) or model_generate(**kw))
    assert backend.generate(decoded, mixed, options) == expected
    assert len(calls) == 1
    assert backend.token_budget(longest) >= MAX_NEW_TOKENS


async def test_engine_drops_expired_and_cancelled_requests_before_the_model(engine: CaptionEngine) -> None:
    batcher = engine.batcher("")
    blocker_png, expired_png, cancelled_png, kept_png = noise_pngs(4, seed=7)
    with gate(batcher.backend) as held:
        blocker = asyncio.create_task(engine.caption(CaptionInput(image=blocker_png)))
        await held.wait_entered()
        expires = time.monotonic() + 0.1
        expired = asyncio.create_task(engine.caption(CaptionInput(image=expired_png), deadline=expires))
        cancelled = asyncio.create_task(engine.caption(CaptionInput(image=cancelled_png)))
        kept = asyncio.create_task(engine.caption(CaptionInput(image=kept_png)))
        await wait_until(lambda: batcher.queue_depth == 3)
        cancelled.cancel()
        await wait_until(lambda: time.monotonic() > expires)  # the deadline passes while the request still waits
        completed_before = engine.stats.requests_completed
        held.release()
        await blocker
        assert (await kept).text
    with pytest.raises(errors.DeadlineExceeded):
        await expired
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert engine.stats.requests_completed == completed_before + 2  # the blocker and the kept request
    assert seen(held) >= {fingerprint(decode_image(kept_png))}
    assert not seen(held) & {fingerprint(decode_image(expired_png)), fingerprint(decode_image(cancelled_png))}


async def test_engine_rejects_at_once_when_the_queue_is_full(engine: CaptionEngine) -> None:
    batcher = engine.batcher("")
    with gate(batcher.backend) as held:
        blocker = asyncio.create_task(engine.caption(CaptionInput(image=noise_pngs(1, seed=5)[0])))
        await held.wait_entered()
        queued = [asyncio.create_task(engine.caption(CaptionInput(image=data))) for data in noise_pngs(16, seed=6)]
        await wait_until(lambda: batcher.queue_depth == 16)
        started = time.monotonic()
        with pytest.raises(errors.Overloaded, match="queue"):
            await engine.caption(CaptionInput(image=noise_pngs(1, seed=8)[0]))
        assert time.monotonic() - started < 1.0
        held.release()
        assert all(r.text for r in await asyncio.gather(blocker, *queued))


# ------------------------------------------------------------------------------------------------------ service


async def test_service_batches_concurrent_calls_without_mixups(
    server: GrpcServer, images: list[bytes], prompts: list[str], one_by_one: list[str], check_model: None
) -> None:
    async with AsyncCaptionClient(server.address) as client:
        sequential = [await client.caption(d, prompt=p) for d, p in zip(images, prompts)]
        concurrent: list[Caption] = await asyncio.gather(
            *(client.caption(d, prompt=p) for d, p in zip(images, prompts))
        )
    assert [c.text for c in sequential] == one_by_one
    assert [c.text for c in concurrent] == one_by_one
    assert {c.batch_size for c in sequential} == {1}
    assert max(c.batch_size for c in concurrent) > 1, "the server ran every call alone"
    for caption, prompt in zip(concurrent, prompts):
        assert caption.text.startswith(prompt)


async def test_service_full_queue_is_resource_exhausted_at_once(server: GrpcServer) -> None:
    batcher = batcher_of(server)
    with gate(batcher.backend) as held:
        async with AsyncCaptionClient(server.address) as client:
            blocker = asyncio.create_task(client.caption(noise_pngs(1, seed=11)[0]))
            await held.wait_entered()
            queued = [asyncio.create_task(client.caption(data)) for data in noise_pngs(16, seed=12)]
            await wait_until(lambda: batcher.queue_depth == 16)
            started = time.monotonic()
            with pytest.raises(ImagewireError) as caught:
                await client.caption(noise_pngs(1, seed=13)[0])
            assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 1.0
            held.release()
            assert all(c.text for c in await asyncio.gather(blocker, *queued))


async def test_service_expired_and_cancelled_calls_never_reach_the_model(server: GrpcServer) -> None:
    batcher = batcher_of(server)
    engine = server.app.engine()
    blocker_png, expired_png, cancelled_png, kept_png = noise_pngs(4, seed=21)
    cancelled_before = ended_calls(server, "CANCELLED")
    expired_before = ended_calls(server, "DEADLINE_EXCEEDED")
    with gate(batcher.backend) as held:
        async with AsyncCaptionClient(server.address) as client:
            blocker = asyncio.create_task(client.caption(blocker_png))
            await held.wait_entered()
            expired = asyncio.create_task(client.caption(expired_png, timeout=0.5))
            cancelled = asyncio.create_task(client.caption(cancelled_png))
            await wait_until(lambda: batcher.queue_depth == 2)
            cancelled.cancel()
            with pytest.raises(ImagewireError) as caught:
                await expired
            assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            # Both handlers end (cancelled by grpc) while the model is still busy; their queue slots are then dead.
            # The server records each as what it was: one caller gone, one deadline passed.
            await wait_until(lambda: ended_calls(server, "CANCELLED") == cancelled_before + 1)
            await wait_until(lambda: ended_calls(server, "DEADLINE_EXCEEDED") == expired_before + 1)
            completed_before = engine.stats.requests_completed
            held.release()
            await blocker
            assert (await client.caption(kept_png)).text
    assert engine.stats.requests_completed == completed_before + 2  # the blocker and the kept call
    assert seen(held) >= {fingerprint(decode_image(kept_png))}
    assert not seen(held) & {fingerprint(decode_image(expired_png)), fingerprint(decode_image(cancelled_png))}
