"""How close two videos' frames are: the peak signal-to-noise ratio the compile tests, the benchmarks and the
trained model's evaluation report."""

from __future__ import annotations

import math

import numpy as np


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of frames against a reference of the same shape, both in 0-255 units (inf where equal)."""
    error = float(np.mean(np.square(frames.astype(np.float64) - reference.astype(np.float64))))
    return 10 * math.log10(255.0**2 / error) if error else math.inf
