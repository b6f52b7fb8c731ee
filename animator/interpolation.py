"""Frame interpolation: motion-compensated frames between each pair of generated frames, made as the frames arrive.

Between frames ``a`` and ``b`` OpenCV's dense optical flow (Farneback) is measured both ways, ``a -> b`` and
``b -> a``, once per pair. The frame at time ``t`` (0 < t < 1) takes each pixel from ``a`` a fraction ``t`` back
along the flow and from ``b`` a fraction ``1 - t`` forward, and blends the two warped pictures with weights
``1 - t`` and ``t``: a pixel that lies on a moving shape at time ``t`` also lies on it in the frame it is taken
from as long as the shape moves less than its own size per pair, so the shape lands where linear motion puts it
(its centroid at the midpoint for ``t = 1/2``) instead of fading out in one place and in at the other, as a
cross-fade would.

:class:`Interpolator` is the streaming form the generation uses: each generated frame pushed in returns the
frames to write, the in-between frames of the pair it completes first, so interpolated frames leave as soon as
their pair exists (one generated frame after the first of the pair).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# The largest factor a request may ask for (three frames between each generated pair).
MAX_FACTOR = 4
# Farneback's parameters: a three-level pyramid halving each time, 15-pixel windows, 3 iterations per level,
# 5-pixel polynomial neighbourhoods (OpenCV's documented example values).
_FARNEBACK: dict[str, Any] = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
                              "poly_sigma": 1.2, "flags": 0}


def output_frames(generated: int, factor: int) -> int:
    """How many frames ``generated`` frames become with ``factor``: (generated - 1) x factor + 1."""
    return (generated - 1) * factor + 1 if generated else 0


def flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The dense optical flow from ``source`` to ``target`` (uint8 RGB, (h, w, 3)): (h, w, 2) float32 pixel
    displacements (x, y) that carry each pixel of ``source`` to where it is in ``target``."""
    grey = [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in (source, target)]
    flows: np.ndarray = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, **_FARNEBACK)
    return flows


def between(a: np.ndarray, b: np.ndarray, factor: int) -> list[np.ndarray]:
    """The ``factor - 1`` frames between ``a`` and ``b`` (uint8 RGB, (h, w, 3)), at times k / factor."""
    if factor <= 1:
        return []
    forward, backward = flow(a, b), flow(b, a)
    height, width = a.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=-1)
    frames = []
    for k in range(1, factor):
        t = k / factor
        # The pixel at x at time t came from a at x - t * (a -> b), and reaches b at x + (1 - t) * (a -> b); the
        # flows are read at x itself, which the b -> a flow gives for a's side (it points back from b to a).
        from_a = _sample(a, grid + t * backward)
        from_b = _sample(b, grid + (1 - t) * forward)
        blended = (1 - t) * from_a.astype(np.float32) + t * from_b.astype(np.float32)
        frames.append(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
    return frames


def _sample(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``image`` read at the (x, y) positions ``where`` (h, w, 2), bilinearly, edges repeated."""
    return cv2.remap(image, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class Interpolator:
    """The frames of a video with ``factor`` x its frame rate, one generated frame at a time."""

    def __init__(self, factor: int) -> None:
        if not 1 <= factor <= MAX_FACTOR:
            raise ValueError(f"an interpolation factor is 1 to {MAX_FACTOR}, not {factor}")
        self.factor = factor
        self._previous: np.ndarray | None = None

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """The frames to write now that ``frame`` exists: those between the previous frame and it, then it."""
        made = [] if self._previous is None else between(self._previous, frame, self.factor)
        self._previous = frame
        return [*made, frame]
