"""Helpers of the animator tests: the tiny model loaded, an animator served on port 0, test images."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch
from PIL import Image

from animator import tiny
from animator.app import AnimatorApp
from animator.engine import AnimateEngine
from animator.families.svd import SvdBackend
from animator.limits import EngineLimits
from animator.settings import AnimatorSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.support import png, serving


def tiny_backend() -> SvdBackend:
    """The tiny random SVD, loaded on the CPU as the server loads it."""
    backend = SvdBackend.load(str(tiny.ensure_model("tiny")), torch.device("cpu"), torch.float32, model_id="tiny")
    assert isinstance(backend, SvdBackend)
    return backend


@contextlib.asynccontextmanager
async def animator_server(limits: EngineLimits) -> AsyncIterator[GrpcServer]:
    """A real animator on the tiny model, on 127.0.0.1 port 0."""
    settings = AnimatorSettings(
        server=ServerSettings(port=0, device="cpu", models=(str(tiny.ensure_model("tiny")),)), limits=limits)
    metrics = Metrics()
    async with serving(AnimatorApp(settings, metrics), metrics, settings.server) as running:
        yield running


def engine_of(server: GrpcServer) -> AnimateEngine:
    """The engine behind a served animator."""
    assert isinstance(server.app, AnimatorApp)
    return server.app.engine()


def noise_png(seed: int, size: tuple[int, int] = (120, 80)) -> bytes:
    """A random RGB picture, the same for the same seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return png(Image.fromarray(pixels))


@dataclass(frozen=True)
class Decoded:
    """A video file decoded: its frames (n, h, w, 3) uint8 RGB, their presentation times in seconds, and the frame
    rate its stream declares."""

    frames: np.ndarray
    times: tuple[Fraction, ...]
    fps: Fraction


def decoded(data: bytes) -> Decoded:
    """Decode a whole MP4 or WebM file the server streamed."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.time_base is not None and stream.average_rate is not None
        times = tuple(Fraction(frame.pts) * stream.time_base for frame in frames if frame.pts is not None)
        return Decoded(np.stack([frame.to_ndarray(format="rgb24") for frame in frames]), times,
                       Fraction(stream.average_rate))
