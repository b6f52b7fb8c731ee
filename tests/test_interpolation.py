"""Frame interpolation (animator.interpolation) on synthetic clips of a shape in linear motion, where the right
answer is known: each in-between frame shows the shape where linear motion puts it, read back by the shape
model's tracker. The served videos are tested in tests/test_animate_segments.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from animator.interpolation import MAX_FACTOR, Interpolator, between, output_frames
from animator.training.tracking import track

BACKGROUND = (232, 224, 212)
SHAPE = (40, 60, 150)
SIZE = 64


def disc(x: float, y: float, radius: float = 8.0) -> np.ndarray:
    """A frame of a disc centred at (x, y), drawn antialiased at 4x and reduced."""
    scale = 4
    picture = Image.new("RGB", (SIZE * scale, SIZE * scale), BACKGROUND)
    ImageDraw.Draw(picture).ellipse([(x - radius) * scale, (y - radius) * scale, (x + radius) * scale,
                                     (y + radius) * scale], fill=SHAPE)
    return np.asarray(picture.resize((SIZE, SIZE), Image.Resampling.BOX))


def linear_error(frames: list[np.ndarray]) -> list[float]:
    """Each frame's centroid's distance from where linear motion between the first and last frames puts it."""
    centroids = track(np.stack(frames), SHAPE, BACKGROUND).centroids
    (x0, y0), (x1, y1) = centroids[0], centroids[-1]
    last = len(frames) - 1
    return [math.hypot(x - (x0 + k / last * (x1 - x0)), y - (y0 + k / last * (y1 - y0)))
            for k, (x, y) in enumerate(centroids)]


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("velocity", [(2.0, 0.0), (3.0, 1.5), (-4.5, 3.0), (7.0, -5.0), (0.0, 10.0)])
def test_in_between_frames_put_the_shape_where_linear_motion_does(factor: int,
                                                                  velocity: tuple[float, float]) -> None:
    start = (24.3, 30.6)
    a, b = disc(*start), disc(start[0] + velocity[0], start[1] + velocity[1])
    made = between(a, b, factor)
    assert len(made) == factor - 1
    errors = linear_error([a, *made, b])
    assert max(errors) <= 1.0, errors
    # Not a cross-fade: the shape's area stays the shape's (a blend would be half-tone over the union of both).
    areas = track(np.stack([a, *made, b]), SHAPE, BACKGROUND).areas
    assert all(abs(area - areas[0]) <= 0.15 * areas[0] for area in areas), areas


def test_a_cross_fade_would_fail_the_same_check() -> None:
    """The check above tells motion compensation from blending: a quarter-way cross-fade leaves the shape near the
    first frame's position."""
    a, b = disc(20.0, 30.0), disc(30.0, 30.0)
    faded = np.rint(0.75 * a + 0.25 * b).astype(np.uint8)
    assert linear_error([a, faded, faded, faded, b])[1] > 1.0


def test_the_streaming_form_writes_each_pair_once_its_second_frame_exists() -> None:
    clip = [disc(16.0 + 3 * k, 20.0 + 2 * k) for k in range(5)]
    interpolator = Interpolator(3)
    written = [interpolator.push(frame) for frame in clip]
    assert [len(frames) for frames in written] == [1, 3, 3, 3, 3]  # the frame alone, then two between and it
    assert all(frames[-1] is frame for frames, frame in zip(written, clip, strict=True))
    flat = [frame for frames in written for frame in frames]
    assert len(flat) == output_frames(len(clip), 3) == 13
    assert max(linear_error(flat)) <= 1.0


def test_a_factor_of_one_passes_the_frames_through() -> None:
    interpolator = Interpolator(1)
    frames = [disc(20.0, 20.0), disc(23.0, 20.0)]
    assert [len(interpolator.push(frame)) for frame in frames] == [1, 1]
    with pytest.raises(ValueError, match="1 to 4"):
        Interpolator(MAX_FACTOR + 1)
