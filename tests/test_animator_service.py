"""AnimateService through a real grpc.aio server on port 0, the generated stubs and the typed client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import grpc
import grpc.aio
import numpy as np
import pytest
import pytest_asyncio
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.client import (
    AnimateClient,
    AnimateEvent,
    AnimateModelList,
    AnimateResult,
    AsyncAnimateClient,
    ImagewireError,
    Progress,
    Stage,
    VideoChunk,
    VideoFormat,
    VideoHeader,
)
from imagewire.client.animate import animate_request
from PIL import Image

from animator import tiny
from animator.app import AnimatorApp
from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, engine_of, noise_png
from tests.gates import wait_until
from tests.support import png

SMALL = {"width": 96, "height": 64, "num_frames": 6, "num_inference_steps": 2, "decode_chunk_size": 2}
LONG = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 50, "decode_chunk_size": 4}
RATE = EngineLimits().usd_per_output_pixel


def image() -> bytes:
    return noise_png(0)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    """One animator on the tiny random SVD with a queue of one, shared by the tests in this module."""
    async with animator_server(EngineLimits(max_queue=1, max_num_frames=16, max_num_inference_steps=60)) as running:
        yield running


async def timed_events(
    server: GrpcServer, *, picture: bytes | None = None, **params: object
) -> list[tuple[float, AnimateEvent]]:
    async with AsyncAnimateClient(server.address, timeout=120) as client:
        started = time.monotonic()
        stream = client.animate(picture or image(), **params)
        return [(time.monotonic() - started, e) async for e in stream]


async def events(server: GrpcServer, **params: object) -> list[AnimateEvent]:
    return [event for _, event in await timed_events(server, **params)]


def video_of(stream: list[AnimateEvent]) -> bytes:
    return b"".join(e.data for e in stream if isinstance(e, VideoChunk))


async def test_the_stream_is_a_playable_video_of_the_requested_shape(server: GrpcServer) -> None:
    timed = await timed_events(server, seed=11, fps=5, **SMALL)
    stream = [event for _, event in timed]
    kinds = [type(e).__name__ for e in stream]
    first_chunk = kinds.index("VideoChunk")
    assert "Progress" in kinds[:first_chunk] and kinds.index("VideoHeader") < first_chunk
    assert kinds[-1] == "AnimateResult" and kinds.count("AnimateResult") == 1

    header = next(e for e in stream if isinstance(e, VideoHeader))
    assert (header.mime_type, header.container, header.codec) == ("video/mp4", "mp4", "h264")
    assert (header.width, header.height, header.fps, header.num_frames, header.seed) == (96, 64, 5, 6, 11)

    chunks = [e for e in stream if isinstance(e, VideoChunk)]
    offsets = np.cumsum([0] + [len(c.data) for c in chunks[:-1]]).tolist()
    assert [c.offset for c in chunks] == offsets and all(0 < len(c.data) <= 1024 * 1024 for c in chunks)

    data = video_of(stream)
    result = stream[-1]
    assert isinstance(result, AnimateResult)
    assert result.total_bytes == len(data) and result.sha256 == hashlib.sha256(data).digest()
    assert result.seed == 11 and not result.safety_checked and not result.nsfw  # no checker configured
    assert result.usage.output_pixels == 96 * 64 * 6
    assert math.isclose(result.usage.usd_per_output_pixel, RATE)
    assert math.isclose(result.usage.price_usd, 96 * 64 * 6 * RATE)

    container = av.open(io.BytesIO(data))
    stream_info = container.streams.video[0]
    frames = list(container.decode(video=0))
    assert len(frames) == 6 and {(f.width, f.height) for f in frames} == {(96, 64)}
    assert stream_info.average_rate == 5 and stream_info.codec_context.name == "h264"
    # The header's RFC 6381 codecs string names the stream's own profile and level (the avcC bytes).
    assert header.codecs == "avc1." + bytes(stream_info.codec_context.extradata)[1:4].hex()

    # The first bytes leave while later frames are still being decoded, well before the result.
    first_at = next(t for t, e in timed if isinstance(e, VideoChunk))
    result_at = timed[-1][0]
    decodes_after_first = [e for t, e in timed if t >= first_at and isinstance(e, Progress)
                           and e.stage is Stage.DECODE]
    assert decodes_after_first and result_at - first_at > 0.01


async def test_same_seed_same_bytes(server: GrpcServer) -> None:
    first, second = [video_of(await events(server, seed=99, **SMALL)) for _ in range(2)]
    assert first == second
    other = video_of(await events(server, seed=100, **SMALL))
    assert other != first


async def test_an_absent_seed_is_chosen_and_reported(server: GrpcServer) -> None:
    stream = await events(server, **SMALL)
    header = next(e for e in stream if isinstance(e, VideoHeader))
    assert stream[-1].seed == header.seed
    again = await events(server, seed=header.seed, **SMALL)
    assert video_of(again) == video_of(stream)


async def test_webm_format_streams_vp9_with_every_frame(server: GrpcServer) -> None:
    stream = await events(server, seed=3, format=VideoFormat.WEBM_VP9, **SMALL)
    header = next(e for e in stream if isinstance(e, VideoHeader))
    assert (header.mime_type, header.codec, header.codecs) == ("video/webm", "vp9", "vp09.00.10.08")
    container = av.open(io.BytesIO(video_of(stream)))
    assert container.streams.video[0].codec_context.name == "vp9"
    assert len(list(container.decode(video=0))) == 6


BAD_FIELDS = [
    ("width", {"width": 100}),
    ("height", {"height": 8}),
    ("num_frames", {"num_frames": 0}),
    ("num_frames", {"num_frames": 1}),  # the pipeline's guidance decisions disagree for one frame
    ("num_frames", {"num_frames": 17}),
    ("fps", {"fps": 0}),
    ("motion_bucket_id", {"motion_bucket_id": 1024}),
    ("noise_aug_strength", {"noise_aug_strength": 1.5}),
    ("noise_aug_strength", {"noise_aug_strength": math.nan}),
    ("num_inference_steps", {"num_inference_steps": 0}),
    ("num_inference_steps", {"num_inference_steps": 61}),
    ("decode_chunk_size", {"decode_chunk_size": 0}),
    ("min_guidance_scale", {"min_guidance_scale": -1.0}),
    ("max_guidance_scale", {"max_guidance_scale": math.inf}),
    ("min_guidance_scale", {"min_guidance_scale": 2.0, "max_guidance_scale": 1.0}),
    ("min_guidance_scale", {"min_guidance_scale": 20.0, "max_guidance_scale": 0.0}),
    ("format", {"format": 7}),
]


@pytest.mark.parametrize(("field", "params"), BAD_FIELDS,
                         ids=[",".join(f"{k}={v}" for k, v in p.items()) for _, p in BAD_FIELDS])
async def test_a_bad_field_is_invalid_argument_naming_it(server: GrpcServer, field: str, params: dict) -> None:
    with pytest.raises(ImagewireError) as caught:
        await events(server, **params)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.field_violations] == [field]
    assert field in caught.value.message


@pytest.mark.parametrize("size", [(1, 1), (1, 64), (64, 1)])
async def test_a_one_pixel_wide_image_animates(server: GrpcServer, size: tuple[int, int]) -> None:
    stream = await events(server, picture=png(Image.new("RGB", size, (200, 40, 40))), seed=1,
                          **{**SMALL, "num_frames": 2, "num_inference_steps": 1})
    assert isinstance(stream[-1], AnimateResult)
    assert len(list(av.open(io.BytesIO(video_of(stream))).decode(video=0))) == 2


async def test_too_many_pixels_and_a_bad_image_are_named_together(server: GrpcServer) -> None:
    async with AsyncAnimateClient(server.address) as client:
        with pytest.raises(ImagewireError) as caught:
            async for _ in client.animate(b"not an image", width=2048, height=2048):
                pass
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.field_violations] == ["image", "width", "height"]


async def test_an_unknown_model_is_not_found(server: GrpcServer) -> None:
    with pytest.raises(ImagewireError) as caught:
        await events(server, model_id="stabilityai/not-loaded", **SMALL)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND


async def first_denoise(call: grpc.aio.UnaryStreamCall) -> None:
    async for response in call:
        if response.WhichOneof("event") == "progress" and response.progress.stage == animate_pb2.STAGE_DENOISE:
            return
    raise AssertionError("the stream ended before denoising")


async def test_a_cancelled_stream_with_no_grace_frees_the_worker(server: GrpcServer) -> None:
    engine = engine_of(server)
    stopped = engine.stats.runs_stopped
    before = engine.stats.steps
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        long = stub.Animate(animate_request(image(), seed=1, detach_grace_seconds=0, **LONG), timeout=120)
        await first_denoise(long)
        long.cancel()  # the connection's end, not a CancelAnimation: with no grace, the job stops at once
        cancelled_at = time.monotonic()
        steps_of_long = None
        request = animate_request(image(), seed=2, detach_grace_seconds=0, **SMALL)
        async for response in stub.Animate(request, timeout=120):
            kind = response.WhichOneof("event")
            if kind == "progress" and response.progress.stage == animate_pb2.STAGE_ENCODE_IMAGE:
                steps_of_long = engine.stats.steps - before  # the worker is done with the cancelled generation
            if kind == "progress" and response.progress.stage == animate_pb2.STAGE_DENOISE:
                started_after = time.monotonic() - cancelled_at
                break
    assert steps_of_long is not None and steps_of_long <= 3  # of 50
    assert started_after < 30
    # The second call was cancelled too (we left it); the worker notices at its next step.
    await wait_until(lambda: engine.stats.runs_stopped == stopped + 2)


async def test_an_expired_deadline_ends_the_call_and_with_no_grace_the_generation(server: GrpcServer) -> None:
    engine = engine_of(server)
    stopped = engine.stats.runs_stopped
    async with AsyncAnimateClient(server.address) as client:
        with pytest.raises(ImagewireError) as caught:
            async for _ in client.animate(image(), timeout=0.5, detach_grace_seconds=0, **LONG):
                pass
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(await events(server, seed=1, **SMALL)) > 3  # the worker is free again
    assert engine.stats.runs_stopped == stopped + 1


async def test_a_full_queue_is_resource_exhausted(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        running = stub.Animate(animate_request(image(), seed=1, detach_grace_seconds=0, **LONG), timeout=120)
        await first_denoise(running)
        waiting = stub.Animate(animate_request(image(), seed=2, detach_grace_seconds=0, **LONG), timeout=120)
        status = await waiting.read()
        assert status.job.state == animate_pb2.JOB_STATE_QUEUED and status.job.queue_position == 1
        queued = await waiting.read()
        assert queued.progress.stage == animate_pb2.STAGE_QUEUED and queued.progress.step == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.Animate(animate_request(image(), **SMALL), timeout=10):
                pass
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        waiting.cancel()
        running.cancel()
    assert len(await events(server, seed=1, **SMALL)) > 3


async def test_list_models_reports_defaults_and_limits(server: GrpcServer) -> None:
    async with AsyncAnimateClient(server.address) as client:
        reply = await client.list_models()
    assert isinstance(reply, AnimateModelList)
    (model,) = reply.models
    assert reply.default_model_id == model.model_id == str(tiny.ensure_model("tiny"))
    defaults = tiny.PRESETS["tiny"]
    assert (model.default_width, model.default_height, model.default_num_frames) == (
        defaults.default_width, defaults.default_height, defaults.num_frames)
    # --dtype auto: float32, or bfloat16 where this CPU runs it faster (timed at start-up): what was decided.
    assert isinstance(server.app, AnimatorApp)
    assert (model.device, model.dtype) == ("cpu", server.app.decisions[model.model_id].dtype)
    assert (model.max_num_frames, model.max_num_inference_steps) == (16, 60)
    assert model.default_fps == 6 and not model.safety_checker
    assert math.isclose(model.usd_per_output_pixel, RATE)


async def test_defaults_apply_when_fields_are_absent(server: GrpcServer) -> None:
    stream = await events(server, seed=4)
    header = next(e for e in stream if isinstance(e, VideoHeader))
    preset = tiny.PRESETS["tiny"]
    assert (header.width, header.height, header.num_frames, header.fps) == (
        preset.default_width, preset.default_height, preset.num_frames, 6)
    assert len(list(av.open(io.BytesIO(video_of(stream))).decode(video=0))) == preset.num_frames


async def test_a_complete_download_is_counted_ok_never_cancelled(server: GrpcServer, tmp_path: Path) -> None:
    """The client reads to the end of the stream, so a finished call is not cancelled after its result."""
    method = "/imagewire.animate.v1.AnimateService/Animate"

    def count(code: str) -> float:
        return server.metrics.registry.get_sample_value(
            "imagewire_requests_total", {"method": method, "code": code}) or 0.0

    ok, cancelled = count("OK"), count("CANCELLED")
    params = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1}
    async with AsyncAnimateClient(server.address, timeout=120) as client:
        await client.animate_to_file(image(), tmp_path / "a.mp4", **params)
    with AnimateClient(server.address, timeout=120) as blocking:
        await asyncio.to_thread(blocking.animate_to_file, image(), tmp_path / "b.mp4", **params)
    await wait_until(lambda: count("OK") == ok + 2)  # the server's bookkeeping ends just after the client's
    assert count("CANCELLED") == cancelled
