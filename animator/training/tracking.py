"""Following a shape through a video: each frame's colour mask (the pixels nearer the shape's colour than the
background's), its centroid and its area. The evaluation, the tests and the demo read motion through this."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Compass names for a displacement's angle, counter-clockwise from "right" in 45 degree steps, in image
# coordinates (y grows downwards, so "down" is +90 degrees).
_COMPASS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")
# Below this many pixels a shape is said to stay still.
STILL_PIXELS = 1.0


@dataclass(frozen=True)
class Track:
    """One shape's centroid (x, y in pixels) and mask area (pixels) in each frame; NaN centroids where the
    shape's colour is nowhere."""

    centroids: tuple[tuple[float, float], ...]
    areas: tuple[int, ...]

    @property
    def displacement(self) -> tuple[float, float]:
        """From the first frame's centroid to the last's."""
        (x0, y0), (x1, y1) = self.centroids[0], self.centroids[-1]
        return x1 - x0, y1 - y0

    @property
    def distance(self) -> float:
        return math.hypot(*self.displacement)

    @property
    def farthest(self) -> float:
        """The largest distance of any frame's centroid from the first's (infinite if a frame lost the shape)."""
        x0, y0 = self.centroids[0]
        distances = [math.hypot(x - x0, y - y0) for x, y in self.centroids]
        return math.inf if any(math.isnan(d) for d in distances) else max(distances)

    def angle_from(self, direction: tuple[float, float]) -> float:
        """Degrees between the displacement and ``direction`` (180 when the shape did not move)."""
        dx, dy = self.displacement
        if not math.hypot(dx, dy) > 0:
            return 180.0
        turn = math.atan2(dy, dx) - math.atan2(direction[1], direction[0])
        return abs(math.degrees(math.atan2(math.sin(turn), math.cos(turn))))

    @property
    def heading(self) -> str:
        """The nearest compass name of the displacement ("right", "down-right"...)."""
        dx, dy = self.displacement
        return _COMPASS[round(math.degrees(math.atan2(dy, dx)) / 45) % 8]

    def area_change(self) -> float:
        """The largest relative change of any frame's mask area from the first frame's."""
        first = self.areas[0]
        return max(abs(area - first) for area in self.areas) / first if first else math.inf

    def describe(self, name: str) -> str:
        """One line, e.g. ``"blue circle moved 17 px right"``."""
        if not self.distance >= STILL_PIXELS:
            return f"{name} stayed still (moved {self.distance:.1f} px)"
        return f"{name} moved {self.distance:.0f} px {self.heading}"


def track(frames: np.ndarray, shape_rgb: tuple[int, int, int], background_rgb: tuple[int, int, int]) -> Track:
    """Track the shape of colour ``shape_rgb`` on ``background_rgb`` through ``frames`` ((n, h, w, 3) uint8)."""
    pixels = frames.astype(np.float32)
    to_shape = np.square(pixels - np.asarray(shape_rgb, np.float32)).sum(-1)
    to_background = np.square(pixels - np.asarray(background_rgb, np.float32)).sum(-1)
    masks = to_shape < to_background
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    centroids, areas = [], []
    for mask in masks:
        area = int(mask.sum())
        centroids.append((float(xs[mask].mean()), float(ys[mask].mean())) if area else (math.nan, math.nan))
        areas.append(area)
    return Track(tuple(centroids), tuple(areas))
