"""The animate engine and backend on the tiny random SVD: frames, conditioning, validation, queueing, cancellation."""

from __future__ import annotations

import io
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
import pytest_asyncio
import torch
from PIL import Image

from animator import generation, tiny, video
from animator.engine import AnimateEngine
from animator.events import Chunk, Event, Header, JobState, JobStatus, Progress, Result, Stage
from animator.families.svd import SvdBackend
from animator.limits import EngineLimits
from animator.params import AnimateInput, GenerationParams, resolve
from animator.safety import SafetyChecker
from imagewire_serving import errors
from imagewire_serving.metrics import Metrics
from tests.animator_support import tiny_backend
from tests.gates import wait_until
from tests.support import png

SMALL = {"width": 96, "height": 64, "num_frames": 6, "num_inference_steps": 2, "decode_chunk_size": 2}
# Long enough that a run to the end would be obvious; cancelled runs stop after a step or two.
LONG = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 50, "decode_chunk_size": 4}


def picture(size: tuple[int, int] = (120, 80)) -> Image.Image:
    """A deterministic image with structure, so different seeds and frames differ visibly."""
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (size[1], size[0], 1)), np.broadcast_to(y, (size[1], size[0], 1)),
                          np.broadcast_to((x + y) / 2, (size[1], size[0], 1))], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.fixture(scope="module")
def backend(one_torch_thread: None) -> SvdBackend:
    return tiny_backend()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(backend: SvdBackend) -> AsyncIterator[AnimateEngine]:
    engine = AnimateEngine([backend], EngineLimits(max_queue=1), Metrics())
    engine.start()
    yield engine
    await engine.close()


async def collect(engine: AnimateEngine, **fields: object) -> list[Event]:
    return [event async for event in engine.animate(AnimateInput(image=png(picture()), **fields))]


def params(**overrides: object) -> GenerationParams:
    values: dict[str, object] = {
        "width": 96, "height": 64, "num_frames": 5, "fps": 6, "motion_bucket_id": 127, "noise_aug_strength": 0.02,
        "num_inference_steps": 2, "seed": 1234, "decode_chunk_size": 2, "min_guidance_scale": 1.0,
        "max_guidance_scale": 3.0,
    }
    values.update(overrides)
    return GenerationParams(**values)


def test_streamed_frames_equal_the_plain_pipeline_call(backend: SvdBackend) -> None:
    # Chunks of 2 over 5 frames: the last chunk is short, as in the pipeline's own decode loop.
    p = params()
    image = picture()
    latents = backend.denoise(image, p, lambda step: None)
    chunks = list(backend.decode(latents, p))
    assert [len(c) for c in chunks] == [2, 2, 1]
    streamed = np.concatenate(chunks)

    plain = backend.pipeline(
        image, width=p.width, height=p.height, num_frames=p.num_frames, num_inference_steps=p.num_inference_steps,
        fps=p.fps + 1, motion_bucket_id=p.motion_bucket_id, noise_aug_strength=p.noise_aug_strength,
        decode_chunk_size=p.decode_chunk_size, generator=torch.Generator().manual_seed(p.seed),
    ).frames[0]
    expected = np.stack([np.asarray(frame) for frame in plain])
    assert streamed.dtype == np.uint8 and streamed.shape == (5, 64, 96, 3)
    np.testing.assert_array_equal(streamed, expected)
    assert streamed.std() > 0  # not a blank video that would trivially match


def test_a_guidance_maximum_that_rounds_to_one_in_the_dtype_runs_as_one(backend: SvdBackend) -> None:
    """In bfloat16, 1.001 is 1: the pipeline chose classifier-free guidance from the float and built its ramp in
    bfloat16, then stopped guiding halfway (a server error, found by the fuzzer). It now runs as unguided."""
    half = SvdBackend.load(str(tiny.ensure_model("tiny")), torch.device("cpu"), torch.bfloat16, model_id="tiny")
    small = {"num_frames": 3, "num_inference_steps": 1, "width": 64, "height": 64}
    just_above = half.denoise(picture(), params(**small, max_guidance_scale=1.001), lambda step: None)
    unguided = half.denoise(picture(), params(**small, max_guidance_scale=1.0), lambda step: None)
    assert torch.equal(just_above, unguided)
    guided = half.denoise(picture(), params(**small, max_guidance_scale=1.01), lambda step: None)
    assert not torch.equal(guided, unguided)  # 1.01 is above 1 in bfloat16: guided


async def test_the_engine_encodes_exactly_the_plain_pipeline_frames(
    engine: AnimateEngine, backend: SvdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[np.ndarray] = []

    class Recording(video.StreamingVideoEncoder):
        def write(self, frames: np.ndarray) -> bytes:
            encoded.append(frames.copy())
            return super().write(frames)

    monkeypatch.setattr(generation, "StreamingVideoEncoder", Recording)
    request = AnimateInput(image=png(picture()), seed=42, fps=7, width=96, height=64, num_frames=5,
                           num_inference_steps=2, decode_chunk_size=3)
    events = [event async for event in engine.animate(request)]
    assert isinstance(events[-1], Result)
    plain = backend.pipeline(
        Image.open(io.BytesIO(request.image)).convert("RGB"), width=96, height=64, num_frames=5,
        num_inference_steps=2, fps=7 + 1, decode_chunk_size=3, generator=torch.Generator().manual_seed(42),
    ).frames[0]
    np.testing.assert_array_equal(np.stack(encoded), np.stack([np.asarray(frame) for frame in plain]))


def test_the_requested_fps_is_what_the_unet_sees(backend: SvdBackend) -> None:
    seen: list[torch.Tensor] = []

    def spy(_module: torch.nn.Module, _args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        seen.append(kwargs["added_time_ids"])

    handle = backend.pipeline.unet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        backend.denoise(picture(), params(fps=9, motion_bucket_id=40, num_inference_steps=1), lambda step: None)
    finally:
        handle.remove()
    fps, motion, noise = seen[0][0].tolist()
    assert (fps, motion) == (9, 40) and noise == pytest.approx(0.02)


async def test_events_are_ordered_and_the_bytes_are_the_video(engine: AnimateEngine) -> None:
    events = await collect(engine, seed=5, fps=5, **SMALL)
    kinds = [type(event) for event in events]
    first_chunk = kinds.index(Chunk)
    status = events[0]
    assert isinstance(status, JobStatus) and status.created and status.state is JobState.QUEUED
    assert kinds.count(JobStatus) == 1 and status.queue_position == 1
    assert kinds.index(Header) < first_chunk and kinds.count(Header) == 1
    assert kinds[-1] is Result and kinds.count(Result) == 1
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages[0] is Stage.QUEUED and Stage.DENOISE in stages
    assert [e.step for e in events if isinstance(e, Progress) and e.stage is Stage.DENOISE] == [1, 2]
    # Bytes leave while frames are still being decoded: a DECODE progress follows the first chunk.
    assert any(isinstance(e, Progress) and e.stage is Stage.DECODE for e in events[first_chunk:])
    data = b"".join(e.data for e in events if isinstance(e, Chunk))
    result = events[-1]
    assert isinstance(result, Result) and result.total_bytes == len(data)
    container = av.open(io.BytesIO(data))
    frames = list(container.decode(video=0))
    assert len(frames) == 6 and (frames[0].width, frames[0].height) == (96, 64)
    assert container.streams.video[0].average_rate == 5


async def test_same_seed_same_bytes_and_a_random_seed_is_reported(engine: AnimateEngine) -> None:
    first, second = [await collect(engine, seed=77, **SMALL) for _ in range(2)]
    assert first[-1] == second[-1]  # the result holds the digest
    unseeded = await collect(engine, **SMALL)
    header = next(e for e in unseeded if isinstance(e, Header))
    result = unseeded[-1]
    assert isinstance(result, Result) and result.seed == header.seed
    assert result.sha256 != first[-1].sha256


def test_validation_names_every_bad_field(engine: AnimateEngine, backend: SvdBackend) -> None:
    bad = AnimateInput(
        image=b"", width=100, height=8, num_frames=0, fps=0, motion_bucket_id=4096, noise_aug_strength=math.nan,
        num_inference_steps=1000, decode_chunk_size=0, min_guidance_scale=-1.0, max_guidance_scale=99.0,
    )
    with pytest.raises(errors.InvalidArgument) as caught:
        resolve(bad, "tiny", backend.accepts, engine.limits)
    assert {v.field for v in caught.value.violations} == {
        "width", "height", "num_frames", "fps", "motion_bucket_id", "noise_aug_strength", "num_inference_steps",
        "decode_chunk_size", "min_guidance_scale", "max_guidance_scale",
    }
    with pytest.raises(errors.InvalidArgument) as caught:
        resolve(AnimateInput(image=b"", width=1024, height=1032), "tiny", backend.accepts, engine.limits)
    assert {v.field for v in caught.value.violations} == {"width", "height"}
    spec = resolve(AnimateInput(image=b"", seed=2**64 - 1), "tiny", backend.accepts, engine.limits)
    assert spec.params.width == backend.accepts.defaults["width"] and spec.params.seed == 2**64 - 1
    assert spec.format is video.VideoFormat.MP4_H264
    assert spec.preview_every == backend.accepts.defaults["preview_every"]
    assert spec.detach_grace_seconds == engine.limits.detach_grace


async def test_bad_image_and_fields_are_reported_together(engine: AnimateEngine) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        async for _ in engine.animate(AnimateInput(image=b"not an image", fps=0)):
            pass
    assert [v.field for v in caught.value.violations] == ["image", "fps"]
    with pytest.raises(errors.NotFound):
        async for _ in engine.animate(AnimateInput(image=png(picture()), model_id="nope")):
            pass


async def first_of(stream: AsyncIterator[Event], stage: Stage) -> float:
    async for event in stream:
        if isinstance(event, Progress) and event.stage is stage:
            return time.monotonic()
    raise AssertionError(f"no {stage.name} progress")


async def test_leaving_with_no_grace_stops_at_the_next_step_and_frees_the_worker(engine: AnimateEngine) -> None:
    before = engine.stats.steps
    stopped = engine.stats.runs_stopped
    long = engine.animate(AnimateInput(image=png(picture()), seed=1, detach_grace_seconds=0, **LONG))
    await first_of(long, Stage.DENOISE)
    await long.aclose()  # what a cancelled call does to the servicer's generator
    cancelled_at = time.monotonic()

    steps_of_long: list[int] = []
    started_after: list[float] = []
    async for event in engine.animate(AnimateInput(image=png(picture()), seed=2, **SMALL)):
        if isinstance(event, Progress) and event.stage is Stage.ENCODE_IMAGE:  # the worker left the stopped job
            steps_of_long.append(engine.stats.steps - before)
        if isinstance(event, Progress) and event.stage is Stage.DENOISE and not started_after:
            started_after.append(time.monotonic() - cancelled_at)
    assert engine.stats.runs_stopped == stopped + 1
    assert steps_of_long and steps_of_long[0] <= 3  # of 50: stopped at the next step (one may be in flight)
    assert started_after[0] < 30


async def test_a_passed_deadline_ends_the_call_and_with_no_grace_the_generation(engine: AnimateEngine) -> None:
    stopped = engine.stats.runs_stopped
    with pytest.raises(errors.DeadlineExceeded):
        async for _ in engine.animate(AnimateInput(image=png(picture()), detach_grace_seconds=0, **LONG),
                                      deadline=time.monotonic() + 0.3):
            pass
    assert (await collect(engine, seed=3, **SMALL))[-1]  # the worker is free again
    assert engine.stats.runs_stopped == stopped + 1


async def test_a_full_queue_is_overloaded_at_once(engine: AnimateEngine) -> None:
    running = engine.animate(AnimateInput(image=png(picture()), seed=1, detach_grace_seconds=0, **LONG))
    await first_of(running, Stage.DENOISE)
    waiting = engine.animate(AnimateInput(image=png(picture()), seed=2, detach_grace_seconds=0, **LONG))
    status = await anext(waiting)
    assert isinstance(status, JobStatus) and (status.state, status.queue_position) == (JobState.QUEUED, 1)
    assert await anext(waiting) == Progress(Stage.QUEUED, 1, 1)
    asked = time.monotonic()
    with pytest.raises(errors.Overloaded):
        await anext(engine.animate(AnimateInput(image=png(picture()), **SMALL)))
    assert time.monotonic() - asked < 5
    await waiting.aclose()
    await running.aclose()
    assert engine.queue_depth == 0
    await wait_until(lambda: engine.jobs.find(status.job_id).state is JobState.CANCELLED)


async def test_a_reader_that_stops_reading_never_pauses_the_generation(engine: AnimateEngine) -> None:
    stream = engine.animate(AnimateInput(image=png(picture()), seed=77, **SMALL))
    status = await anext(stream)
    assert isinstance(status, JobStatus)
    job = engine.jobs.get(status.job_id)
    # Nobody reads past the status: the generation still runs to its end, holding every byte.
    await wait_until(lambda: job.state is JobState.SUCCEEDED)
    data = b""
    async for event in stream:
        if isinstance(event, Chunk):
            assert event.offset == len(data)
            data += event.data
        elif isinstance(event, Result):
            assert event.total_bytes == len(data) == job.available_bytes


@pytest.mark.parametrize("flag_everything", [True, False])
async def test_safety_checker_verdict_is_reported(backend: SvdBackend, tmp_path: Path, flag_everything: bool) -> None:
    checker = SafetyChecker.load(
        str(tiny.build_safety_checker(tmp_path / "checker", flag_everything=flag_everything)),
        torch.device("cpu"), torch.float32,
    )
    engine = AnimateEngine([backend], EngineLimits(), Metrics(), safety_checker=checker)
    engine.start()
    try:
        checked = (await collect(engine, safety_check=True, seed=1, **SMALL))[-1]
        unchecked = (await collect(engine, safety_check=False, seed=1, **SMALL))[-1]
    finally:
        await engine.close()
    assert isinstance(checked, Result) and isinstance(unchecked, Result)
    assert checked.safety_checked and checked.nsfw is flag_everything
    assert not unchecked.safety_checked and not unchecked.nsfw
