"""Helpers shared by the tests: real servers on loopback port 0, test images, console-script paths.

Subprocess servers are started with :func:`imagewire_serving.launcher.launch`, as the bench and the demo do.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from imagewire_serving.metrics import Metrics
from imagewire_serving.server import App, GrpcServer
from imagewire_serving.settings import ServerSettings

if TYPE_CHECKING:
    from animator.app import AnimatorApp
    from animator.limits import EngineLimits as AnimateLimits
    from captioner.app import CaptionerApp
    from captioner.limits import EngineLimits as CaptionLimits


def png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def solid(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    return png(Image.new("RGB", size, colour))


@contextlib.asynccontextmanager
async def serving(app: App, metrics: Metrics, settings: ServerSettings | None = None) -> AsyncIterator[GrpcServer]:
    """A real grpc.aio server on 127.0.0.1:0 with the app loaded; stopped (no grace) on exit."""
    server = GrpcServer(settings or ServerSettings(port=0), app, metrics=metrics)
    await server.start()
    try:
        await server.load()
        yield server
    finally:
        await server.stop(0)


def script(name: str) -> str:
    """The path of a console script installed beside this interpreter."""
    return os.path.join(os.path.dirname(sys.executable), name)


def free_port() -> int:
    """A loopback port nothing listens on: calls to it fail at once with UNAVAILABLE."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def captioner_app(model: str, limits: CaptionLimits | None = None, **server: object) -> CaptionerApp:
    """A CaptionerApp serving ``model`` on port 0 (``server``: more ServerSettings fields; ``limits``: EngineLimits,
    default: 4-token captions)."""
    from captioner.app import CaptionerApp
    from captioner.limits import EngineLimits
    from captioner.settings import CaptionerSettings

    settings = CaptionerSettings(server=ServerSettings(port=0, models=(model,), **server),
                                 limits=limits or EngineLimits(default_max_new_tokens=4))
    return CaptionerApp(settings, Metrics())


def animator_app(model: str, limits: AnimateLimits | None = None, *, cpu_offload: bool = False,
                 **server: object) -> AnimatorApp:
    """An AnimatorApp serving ``model`` on port 0 (``server``: more ServerSettings fields; ``limits``:
    EngineLimits)."""
    from animator.app import AnimatorApp
    from animator.limits import EngineLimits
    from animator.settings import AnimatorSettings

    settings = AnimatorSettings(server=ServerSettings(port=0, models=(model,), **server),
                                limits=limits or EngineLimits(), cpu_offload=cpu_offload)
    return AnimatorApp(settings, Metrics())


def require(ready: bool, reason: str) -> None:
    """Skip a test whose tooling (node, npm packages, the browser) is missing; in CI, where .ci/run installs it
    all and sets CI, that is a failure instead: there these tests never skip."""
    if not ready:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


def aged(path: Path, hours: float, size: int = 0) -> Path:
    """``path`` (written with ``size`` bytes where it does not exist) last used ``hours`` ago."""
    if not path.exists():
        path.write_bytes(b"\0" * size)
    then = time.time() - hours * 3600
    os.utime(path, (then, then))
    return path
