"""The shipped video model as the animator's embedded default, through a real gRPC server: its videos move the
way its model card says, read back from the streamed MP4 by the tracker (animator.training.tracking).

Scenes come from TEST_SEEDS, used neither in training nor in the model's own evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from imagewire.client import AsyncAnimateClient, VideoChunk

from animator.app import SHIPPED_MODEL, SHIPPED_MODEL_ID
from animator.training.evaluation import psnr
from animator.training.motion import DIRECTIONS, FULL_SPEED_BUCKET, SERVED_FPS, SERVED_FRAMES, Motion, seed_scene
from animator.training.settings import TEST_SEEDS
from animator.training.tracking import Track, track
from captioner.training.shapes import Scene, draw
from imagewire_serving.server import GrpcServer
from tests.animator_support import decoded
from tests.support import png

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIZE = 64


@pytest.fixture
def server(shapes_animator: GrpcServer) -> GrpcServer:
    return shapes_animator


def scenes_of(kind: str, count: int) -> list[Scene]:
    """The first ``count`` test scenes of one kind, with room for the longest path at the served frame rate."""
    motion = Motion(FULL_SPEED_BUCKET, SERVED_FPS, SERVED_FRAMES)
    found = (scene for scene in (seed_scene(seed, motion) for seed in TEST_SEEDS) if scene.shapes[0].shape == kind)
    return [next(found) for _ in range(count)]


async def video(server: GrpcServer, scene: Scene, **params: object) -> np.ndarray:
    """The frames of the streamed video of ``scene`` (seed 0), decoded from the MP4 the server sent."""
    async with AsyncAnimateClient(server.address, timeout=120) as client:
        data = b"".join([event.data async for event in client.animate(png(draw(scene, SIZE)), seed=0, **params)
                         if isinstance(event, VideoChunk)])
    return decoded(data).frames


async def follow(server: GrpcServer, scene: Scene, **params: object) -> Track:
    shape = scene.shapes[0]
    return track(await video(server, scene, **params), shape.rgb, scene.background_rgb)


def width(scene: Scene) -> float:
    return scene.shapes[0].extent * SIZE


async def test_the_default_model_is_the_shipped_one(server: GrpcServer) -> None:
    async with AsyncAnimateClient(server.address) as client:
        models = await client.list_models()
    assert models.default_model_id == SHIPPED_MODEL_ID
    assert sum(path.stat().st_size for path in SHIPPED_MODEL.rglob("*.safetensors")) <= 20 * 1024 * 1024


@pytest.mark.parametrize("kind", ["circle", "square", "triangle", "star", "cross"])
async def test_shapes_move_in_their_kinds_direction(server: GrpcServer, kind: str) -> None:
    """At bucket 255, six scenes of the kind: their shapes' displacements add up to the kind's direction, at
    least a third of them one by one, each moving at least 3 px and at most 1.5 widths (held out, the model
    moves 67% (stars) to 100% (triangles) of shapes within 30 degrees of their kind's direction: the card)."""
    scenes = scenes_of(kind, 6)
    tracks = [await follow(server, scene, motion_bucket_id=FULL_SPEED_BUCKET) for scene in scenes]
    found = [(t, scene) for t, scene in zip(tracks, scenes, strict=True) if not math.isnan(t.distance)]
    total = Track(((0.0, 0.0), (sum(t.displacement[0] for t, _ in found), sum(t.displacement[1] for t, _ in found))),
                  (1, 1))
    assert total.angle_from(DIRECTIONS[kind]) <= 30, tracks
    assert sum(t.angle_from(DIRECTIONS[kind]) <= 30 for t in tracks) >= len(tracks) / 3, tracks
    assert all(3 <= t.distance <= 1.5 * width(scene) for t, scene in found), tracks


async def test_a_larger_motion_bucket_moves_a_shape_further(server: GrpcServer) -> None:
    """Over four scenes of the two kinds the model moves most reliably (the card): at bucket 0 the shapes stay
    put, and the mean distance grows with the bucket."""
    scenes = [*scenes_of("triangle", 2), *scenes_of("square", 2)]
    tracks = {bucket: [await follow(server, scene, motion_bucket_id=bucket) for scene in scenes]
              for bucket in (0, 96, 255)}
    still, slow, fast = (float(np.mean([t.distance for t in tracks[bucket]])) for bucket in (0, 96, 255))
    assert float(np.median([t.farthest for t in tracks[0]])) <= 1.5, tracks[0]
    mean_width = float(np.mean([width(scene) for scene in scenes]))
    assert still + 2 <= slow and slow + 0.2 * mean_width <= fast, (still, slow, fast)


async def test_twice_the_fps_moves_a_shape_about_half_as_far(server: GrpcServer) -> None:
    """The card: frame k shows the scene k / fps seconds in, so doubling fps halves the distance over the clip
    (summed over four scenes)."""
    scenes = [*scenes_of("triangle", 2), *scenes_of("square", 2)]
    served, doubled = [sum([(await follow(server, scene, motion_bucket_id=FULL_SPEED_BUCKET, fps=fps)).distance
                            for scene in scenes]) for fps in (SERVED_FPS, 2 * SERVED_FPS)]
    assert 0.3 <= doubled / served <= 0.75, (served, doubled)


async def test_noise_augmentation_reaches_the_model_and_barely_changes_the_first_frame(server: GrpcServer) -> None:
    """The card: this model looks through the noise on its conditioning image, up to a strength of 1, so the
    first frame's PSNR against the input hardly moves; the frames still differ, so the value reached the model."""
    (scene,) = scenes_of("cross", 1)
    picture = np.asarray(draw(scene, SIZE))
    videos = {strength: await video(server, scene, noise_aug_strength=strength) for strength in (0.02, 1.0)}
    first = {strength: psnr(frames[0], picture) for strength, frames in videos.items()}
    assert abs(first[1.0] - first[0.02]) <= 1.5, first
    assert not np.array_equal(videos[0.02], videos[1.0])
