"""Chained segments and frame interpolation through a real animator on port 0: one continuous file (its frame
count, frame rate and timestamps), progress and previews per segment, the price of every frame, reproducible
bytes, resume, cancel, and validation, on the tiny random model; on the trained shape model, the shape's track
continuing across a segment boundary and the interpolated frames putting it where linear motion does."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from fractions import Fraction

import grpc
import grpc.aio
import numpy as np
import pytest
import pytest_asyncio
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.client import (
    AnimateResult,
    AsyncAnimateClient,
    ImagewireError,
    JobState,
    Preview,
    Progress,
    Stage,
    VideoChunk,
    VideoHeader,
)

from animator.limits import EngineLimits
from animator.training.motion import FULL_SPEED_BUCKET, SERVED_FPS, SERVED_FRAMES, Motion, seed_scene
from animator.training.settings import TEST_SEEDS
from animator.training.tracking import track
from captioner.training.shapes import Scene, draw
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, decoded, engine_of, noise_png
from tests.gates import gate, wait_until
from tests.support import png

pytestmark = pytest.mark.asyncio(loop_scope="session")

FRAMES = 5
SMALL = {"width": 64, "height": 64, "num_frames": FRAMES, "num_inference_steps": 2, "decode_chunk_size": 2,
         "fps": 6, "seed": 5}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits(max_num_inference_steps=60, max_segments=4, max_fps=30)) as running:
        yield running


async def events_of(server: GrpcServer, image: bytes, **fields: object) -> list[object]:
    async with AsyncAnimateClient(server.address, timeout=300) as client:
        return [event async for event in client.animate(image, **fields)]


def video_of(events: list[object]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, VideoChunk))


def one(events: list[object], kind: type) -> object:
    (found,) = [event for event in events if isinstance(event, kind)]
    return found


async def test_three_segments_stream_one_video_with_rising_timestamps(server: GrpcServer) -> None:
    events = await events_of(server, noise_png(1), segments=3, preview_every=1, **SMALL)
    header, result = one(events, VideoHeader), one(events, AnimateResult)
    assert isinstance(header, VideoHeader) and isinstance(result, AnimateResult)
    video = decoded(video_of(events))
    expected = 3 * (FRAMES - 1) + 1
    assert header.num_frames == len(video.frames) == expected and header.fps == 6 == video.fps
    assert all(later > earlier for earlier, later in itertools.pairwise(video.times))
    assert video.times[-1] == Fraction(expected - 1, 6)
    # One header, before the first byte; every segment's stages, in order, say their segment.
    kinds = [type(event) for event in events]
    assert kinds.count(VideoHeader) == 1 and kinds.index(VideoHeader) < kinds.index(VideoChunk)
    progress = [event for event in events if isinstance(event, Progress) and event.stage is not Stage.QUEUED]
    assert {(p.segment, p.segments) for p in progress} == {(1, 3), (2, 3), (3, 3)}
    assert [p.segment for p in progress] == sorted(p.segment for p in progress)
    for segment in (1, 2, 3):
        steps = [p.step for p in progress if p.segment == segment and p.stage is Stage.DENOISE]
        assert steps == [1, 2], (segment, steps)
    encoded = [p for p in progress if p.stage is Stage.ENCODE_VIDEO]
    assert encoded[-1].step == encoded[-1].total == expected
    assert sorted({p.segment for p in events if isinstance(p, Preview)}) == [1, 2, 3]  # previews per segment
    # The price counts every frame of the file.
    assert result.usage.output_pixels == 64 * 64 * expected
    # The first bytes come while the second segment is still to be denoised.
    first_chunk = kinds.index(VideoChunk)
    assert any(isinstance(event, Progress) and event.segment == 2 and event.stage is Stage.DENOISE
               for event in events[first_chunk:])


@pytest.mark.parametrize("factor", [2, 3])
async def test_interpolated_videos_hold_the_frames_their_header_says(server: GrpcServer, factor: int) -> None:
    events = await events_of(server, noise_png(2), segments=2, interpolate=factor, **SMALL)
    header, result = one(events, VideoHeader), one(events, AnimateResult)
    assert isinstance(header, VideoHeader) and isinstance(result, AnimateResult)
    video = decoded(video_of(events))
    generated = 2 * (FRAMES - 1) + 1
    expected = (generated - 1) * factor + 1
    assert header.num_frames == len(video.frames) == expected
    assert header.fps == 6 * factor == video.fps
    assert all(later > earlier for earlier, later in itertools.pairwise(video.times))
    # The same duration as without interpolation: the last frame is shown at the same time.
    assert video.times[-1] == Fraction(generated - 1, 6)
    assert result.usage.output_pixels == 64 * 64 * expected


async def test_the_same_seed_gives_the_same_bytes_and_a_resume_in_segment_two_continues_them(
        server: GrpcServer) -> None:
    fields = {**SMALL, "segments": 3, "interpolate": 2}
    whole = video_of(await events_of(server, noise_png(3), job_id="segments-whole", **fields))
    again = video_of(await events_of(server, noise_png(3), job_id="segments-again", **fields))
    assert again == whole
    request = animate_pb2.AnimateRequest(image=noise_png(3), job_id="segments-resumed", detach_grace_seconds=60,
                                         **fields)
    kept = b""
    async with grpc.aio.insecure_channel(server.address) as channel:
        # A bare stub: the typed clients cancel a job they started when their caller leaves; a dropped connection
        # does not.
        async for response in animate_pb2_grpc.AnimateServiceStub(channel).Animate(request, timeout=300):
            kept += response.chunk.data
            progress = response.progress
            if progress.segment == 2 and progress.stage == animate_pb2.STAGE_DENOISE:
                break  # leave in the middle of segment 2, with segment 1's bytes
    assert 0 < len(kept) < len(whole)
    async with AsyncAnimateClient(server.address, timeout=300) as client:
        rest = [event async for event in client.watch("segments-resumed", offset=len(kept))]
    assert kept + video_of(rest) == whole
    assert one(rest, AnimateResult).total_bytes == len(whole)  # type: ignore[attr-defined]


async def test_a_cancel_during_segment_two_stops_within_one_step(server: GrpcServer) -> None:
    engine = engine_of(server)
    steps_per_segment = 30
    unet = engine.model("").pipeline.unet
    async with AsyncAnimateClient(server.address, timeout=300) as client:
        with gate(unet, "forward") as held:
            stream = client.animate(noise_png(4), job_id="segments-cancel", segments=3,
                                    **{**SMALL, "num_inference_steps": steps_per_segment})
            seen: list[Progress] = []

            async def read() -> None:
                async for event in stream:
                    if isinstance(event, Progress):
                        seen.append(event)

            reader = asyncio.create_task(read())
            await held.wait_entered()
            held.let_through(steps_per_segment + 1)  # segment 1's steps, then segment 2's first: its second is held
            await held.wait_entered()
            job = engine.jobs.find("segments-cancel")
            assert job is not None
            await wait_until(lambda: any(p.segment == 2 and p.stage is Stage.DENOISE for p in seen))
            steps = engine.stats.steps
            cancelled = asyncio.create_task(client.cancel("segments-cancel"))
            await wait_until(lambda: job.stop_requested)
            held.release()
            status = await cancelled
            with pytest.raises(ImagewireError) as caught:
                await reader
    assert status.state is JobState.CANCELLED and caught.value.code is grpc.StatusCode.CANCELLED
    assert engine.stats.steps - steps <= 1  # the held step may end; no other starts
    denoised = [p for p in seen if p.stage is Stage.DENOISE]
    assert denoised[-1].segment == 2 and denoised[-1].step <= 2, denoised[-1]
    assert len(held.calls) == steps_per_segment + 2


async def test_list_models_reports_the_limits_and_bad_values_name_their_field(server: GrpcServer) -> None:
    async with AsyncAnimateClient(server.address, timeout=60) as client:
        (model,) = (await client.list_models()).models
        assert model.max_segments == 4 and model.max_interpolate == 4
        fields = {field.name: field for field in model.fields}
        assert (fields["segments"].minimum, fields["segments"].maximum) == (1, 4)
        assert (fields["interpolate"].minimum, fields["interpolate"].maximum) == (1, 4)
        for bad, field in (({"segments": 5}, "segments"), ({"segments": 0}, "segments"),
                           ({"interpolate": 5}, "interpolate"), ({"interpolate": 0}, "interpolate"),
                           ({"fps": 10, "interpolate": 4}, "interpolate")):
            with pytest.raises(ImagewireError) as caught:
                async for _ in client.animate(noise_png(5), **{**SMALL, **bad}):
                    pass
            assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT, bad
            assert [v.field for v in caught.value.field_violations] == [field], bad


# The trained shape model ---------------------------------------------------------------------------------------

SIZE = 64
# Half speed: a shape moves about half its width per segment, so two segments stay in the frame.
BUCKET = 127


def shape_scenes(count: int, bucket: int = BUCKET, frames: int = 2 * SERVED_FRAMES - 1) -> list[Scene]:
    """Held-out scenes with room for the path of ``frames`` frames at ``bucket``."""
    motion = Motion(bucket, SERVED_FPS, frames)
    return [seed_scene(seed, motion) for seed in TEST_SEEDS[:count]]


async def shape_video(server: GrpcServer, scene: Scene, bucket: int = BUCKET, **fields: object) -> np.ndarray:
    events = await events_of(server, png(draw(scene, SIZE)), seed=0, motion_bucket_id=bucket, **fields)
    return decoded(video_of(events)).frames


def steps_of(centroids: list[tuple[float, float]]) -> list[float]:
    return [math.dist(a, b) for a, b in itertools.pairwise(centroids)]


async def test_the_shape_track_continues_across_the_segment_boundary(shapes_animator: GrpcServer) -> None:
    """The first new frame of segment 2 continues from segment 1's last: the jump there is no larger than the
    shape's per-frame speed within segment 1 plus a pixel."""
    checked = 0
    for scene in shape_scenes(4):
        frames = await shape_video(shapes_animator, scene, segments=2)
        assert len(frames) == 2 * (SERVED_FRAMES - 1) + 1
        shape = scene.shapes[0]
        found = track(frames, shape.rgb, scene.background_rgb)
        if any(math.isnan(x) for x, _ in found.centroids):
            continue  # the shape was lost somewhere: nothing to measure
        steps = steps_of(list(found.centroids))
        within = steps[: SERVED_FRAMES - 1]
        boundary = steps[SERVED_FRAMES - 1]
        assert boundary <= max(within) + 1.0, (boundary, within)
        checked += 1
    assert checked >= 3


async def test_interpolated_shape_frames_lie_between_their_neighbours(shapes_animator: GrpcServer) -> None:
    """At full speed (1-4 px a frame), each interpolated frame's shape centroid lies within a pixel of the midpoint
    of its generated neighbours', and the generated frames are where they are without interpolation. (At factor
    4 this model's frames, whose blobs change shape from frame to frame, miss linear motion by up to 2 px where a
    frame jumps 4 px; tests/test_interpolation.py holds factors 2-4 to a pixel on rigid synthetic motion.)"""
    factor = 2
    for scene in shape_scenes(3, FULL_SPEED_BUCKET, SERVED_FRAMES):
        async def centroids(scene: Scene = scene, **fields: object) -> tuple[tuple[float, float], ...]:
            frames = await shape_video(shapes_animator, scene, FULL_SPEED_BUCKET, **fields)
            return track(frames, scene.shapes[0].rgb, scene.background_rgb).centroids

        plain, interpolated = await centroids(), await centroids(interpolate=factor)
        assert len(interpolated) == factor * (len(plain) - 1) + 1
        generated = interpolated[::factor]
        assert max(math.dist(a, b) for a, b in zip(generated, plain, strict=True)) <= 0.5
        errors = [math.dist(interpolated[index], linear(generated[index // factor], generated[index // factor + 1],
                                                        (index % factor) / factor))
                  for index in range(len(interpolated)) if index % factor]
        assert max(errors) <= 1.0, errors


def linear(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    return a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
