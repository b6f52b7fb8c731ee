"""The motion rules the embedded video model learns, and their scenes: one shape from the captioner's scene
vocabulary (:mod:`captioner.training.shapes` draws it) moving in a straight line at constant speed.

- Direction by kind (``DIRECTIONS``): circles right, squares down, triangles left, stars up, crosses down-right.
- Speed by ``motion_bucket_id``: ``motion_bucket_id / 255`` shape widths per second, so 0 keeps the shape still.
- ``fps`` as SVD uses it, the clip's frame rate: frame ``k`` shows the scene ``k / fps`` seconds in. At the served
  defaults (8 frames at 7 fps, one second) 255 moves a shape one width over the video; a higher fps samples the
  same motion more densely, so the shape moves less per frame and over the clip.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from PIL import Image

from captioner.training.shapes import SHAPES, PlacedShape, Scene, draw, random_scene

# Unit vectors in image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "circle": (1.0, 0.0),
    "square": (0.0, 1.0),
    "triangle": (-1.0, 0.0),
    "star": (0.0, -1.0),
    "cross": (math.sqrt(0.5), math.sqrt(0.5)),
}
DIRECTION_NAMES: dict[str, str] = {
    "circle": "right", "square": "down", "triangle": "left", "star": "up", "cross": "down-right",
}
assert set(DIRECTIONS) == set(SHAPES) == set(DIRECTION_NAMES)

FULL_SPEED_BUCKET = 255
# Shapes small enough to leave room for the longest trained path (LONGEST_SECONDS widths) inside the frame.
SHAPE_EXTENT = (0.24, 0.34)
MARGIN = 0.03
# The trained frame rates: the path of a clip at the slowest is the longest, (frames - 1) / MIN_FPS seconds.
MIN_FPS = 5
MAX_FPS = 14
# The served frame rate and frame count: one second of video.
SERVED_FPS = 7
SERVED_FRAMES = 8


@dataclass(frozen=True)
class Motion:
    """What a clip is conditioned on besides the image."""

    motion_bucket_id: int
    fps: int
    num_frames: int


def displacement(shape: PlacedShape, motion: Motion, frame: int) -> tuple[float, float]:
    """Where ``shape`` is at ``frame`` relative to frame 0, in fractions of the image side."""
    seconds = frame / motion.fps
    distance = motion.motion_bucket_id / FULL_SPEED_BUCKET * shape.extent * seconds
    dx, dy = DIRECTIONS[shape.shape]
    return dx * distance, dy * distance


def moved(scene: Scene, motion: Motion, frame: int) -> Scene:
    """``scene`` as it is ``frame`` frames in."""
    shapes = []
    for shape in scene.shapes:
        dx, dy = displacement(shape, motion, frame)
        shapes.append(replace(shape, left=shape.left + dx, top=shape.top + dy))
    return replace(scene, shapes=tuple(shapes))


def moving_scene(rng: random.Random, motion: Motion) -> Scene:
    """A one-shape scene whose whole path over the clip stays inside the picture."""
    scene = random_scene(rng, min_shapes=1, max_shapes=1, lone_extent=SHAPE_EXTENT)
    shape = scene.shapes[0]
    end_x, end_y = displacement(shape, motion, motion.num_frames - 1)

    def start(travel: float) -> float:
        low, high = MARGIN - min(0.0, travel), 1.0 - MARGIN - shape.extent - max(0.0, travel)
        if high < low:
            raise ValueError(f"a path of {travel:.2f} does not fit a shape of {shape.extent:.2f}")
        return rng.uniform(low, high)

    left, top = start(end_x), start(end_y)
    return replace(scene, shapes=(replace(shape, left=left, top=top),))


def clip(scene: Scene, motion: Motion, size: int) -> list[Image.Image]:
    """The frames of ``scene`` under ``motion``; frame 0 is the conditioning image."""
    return [draw(moved(scene, motion, frame), size) for frame in range(motion.num_frames)]


def seed_scene(seed: int, motion: Motion) -> Scene:
    """The scene for ``seed`` (held-out sets and tests name scenes by seed)."""
    return moving_scene(random.Random(seed), motion)


# The scene of the bundled sample picture (client/imagewire/data/sample.png, drawn at SAMPLE_SIZE px): a blue
# circle on a pink background, which the demo captions and animates.
SAMPLE_SEED = 60_501
SAMPLE_SIZE = 256


def sample_scene() -> Scene:
    return seed_scene(SAMPLE_SEED, Motion(FULL_SPEED_BUCKET, SERVED_FPS, SERVED_FRAMES))
