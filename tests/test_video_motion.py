"""The embedded video model's motion rules, its scenes and its tracker, without a model: clips drawn by
animator.training.motion, followed by animator.training.tracking, show exactly the rules the model card states;
and the training command is reproducible and leaves a model the SVD family serves."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from animator.families.svd import SvdBackend
from animator.training.evaluation import generate, served_params, spearman
from animator.training.motion import DIRECTIONS, MAX_FPS, MIN_FPS, Motion, clip, moved, seed_scene
from animator.training.settings import HELD_OUT_SEEDS, TEST_SEEDS, TRAIN_SEED_BASE
from animator.training.tracking import track
from captioner.training.shapes import SHAPES, Scene

SIZE = 64


def follow(scene: Scene, motion: Motion) -> tuple[float, float]:
    frames = np.stack([np.asarray(frame) for frame in clip(scene, motion, SIZE)])
    shape = scene.shapes[0]
    return track(frames, shape.rgb, scene.background_rgb).displacement


def scene_of(kind: str, motion: Motion) -> Scene:
    return next(scene for scene in (seed_scene(seed, motion) for seed in TEST_SEEDS) if scene.shapes[0].shape == kind)


@pytest.mark.parametrize("kind", SHAPES)
def test_each_kind_moves_its_own_way_one_width_a_second_at_255(kind: str) -> None:
    motion = Motion(255, 7, 8)  # 8 frames at 7 fps: the last is one second in
    scene = scene_of(kind, motion)
    dx, dy = follow(scene, motion)
    width = scene.shapes[0].extent * SIZE
    assert math.hypot(dx, dy) == pytest.approx(width, abs=1.5)
    ux, uy = DIRECTIONS[kind]
    assert math.degrees(math.acos((dx * ux + dy * uy) / math.hypot(dx, dy))) < 5


def test_distance_is_linear_in_the_motion_bucket_and_zero_at_zero() -> None:
    scene = scene_of("circle", Motion(255, 7, 8))
    distances = [follow(scene, Motion(bucket, 7, 8))[0] for bucket in (0, 64, 128, 192, 255)]
    assert distances[0] == 0
    assert spearman((0, 64, 128, 192, 255), distances) == pytest.approx(1.0)
    assert distances[2] == pytest.approx(distances[4] / 2, abs=1.0)


def test_twice_the_frame_rate_halves_the_distance_over_the_clip() -> None:
    scene = scene_of("square", Motion(255, 7, 8))
    slow, fast = follow(scene, Motion(255, 7, 8))[1], follow(scene, Motion(255, 14, 8))[1]
    assert fast == pytest.approx(slow / 2, abs=1.0)


@pytest.mark.parametrize("fps", [MIN_FPS, MAX_FPS])
def test_the_whole_path_stays_in_the_frame_so_shapes_stay_whole(fps: int) -> None:
    for seed in TEST_SEEDS[:40]:
        motion = Motion(255, fps, 8)
        scene = seed_scene(seed, motion)
        last = moved(scene, motion, 7).shapes[0]
        assert min(last.left, last.top) >= 0 and max(last.left, last.top) + last.extent <= 1
        frames = np.stack([np.asarray(frame) for frame in clip(scene, motion, SIZE)])
        assert track(frames, scene.shapes[0].rgb, scene.background_rgb).area_change() < 0.15


def test_the_tracker_describes_where_a_shape_went() -> None:
    scene = scene_of("circle", Motion(255, 7, 8))
    frames = np.stack([np.asarray(frame) for frame in clip(scene, Motion(255, 7, 8), SIZE)])
    line = track(frames, scene.shapes[0].rgb, scene.background_rgb).describe("blue circle")
    assert line == f"blue circle moved {round(scene.shapes[0].extent * SIZE)} px right"
    still = np.stack([np.asarray(frame) for frame in clip(scene, Motion(0, 7, 8), SIZE)])
    assert track(still, scene.shapes[0].rgb, scene.background_rgb).describe("it").startswith("it stayed still")


def test_seed_ranges_are_disjoint() -> None:
    assert HELD_OUT_SEEDS.stop <= TEST_SEEDS.start and TEST_SEEDS.stop <= TRAIN_SEED_BASE


def test_training_is_reproducible_and_its_model_is_served(tmp_path: Path) -> None:
    """Two short runs of the training command write the same weights, byte for byte (the shipped model's run is
    the same command with more steps); the SVD family loads the result and makes a video of the served size."""
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, "-m", "animator.training.train", "--out", str(out), "--vae-steps", "2",
                        "--clips", "8", "--unet-steps", "2", "--batch-size", "2"],
                       check=True, capture_output=True, timeout=300)
        digests.append({str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
                        for path in sorted(out.rglob("*.safetensors"))})
    assert digests[0] == digests[1] and len(digests[0]) == 3
    backend = SvdBackend.load(str(tmp_path / "a"), torch.device("cpu"), torch.float32)
    params = served_params(backend)
    assert (params.width, params.height, params.num_frames, params.fps) == (64, 64, 8, 7)
    frames = generate(backend, clip(seed_scene(TEST_SEEDS[0], Motion(0, 7, 8)), Motion(0, 7, 8), SIZE)[0], params)
    assert frames.shape == (8, 64, 64, 3)
