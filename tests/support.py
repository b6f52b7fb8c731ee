"""Helpers shared by the tests: real servers on loopback port 0, subprocess servers, test images."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from PIL import Image

from imagewire_serving.metrics import Metrics
from imagewire_serving.server import App, GrpcServer
from imagewire_serving.settings import ServerSettings


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


@dataclass
class ServerProcess:
    """A server started as a subprocess with --port 0; ``target`` is the address it announced."""

    process: subprocess.Popen[str]
    target: str
    lines: queue.Queue[str]

    def wait_for_line(self, fragment: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}") from None
                continue
            if fragment in line:
                return line
        raise TimeoutError(f"no line containing {fragment!r} within {timeout}s")

    def terminate(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@contextlib.contextmanager
def server_process(command: list[str], *, name: str, env: dict[str, str] | None = None,
                   wait_ready: bool = True) -> Iterator[ServerProcess]:
    """Start a console-script server on port 0, learn its port from stdout, and always stop it."""
    process = subprocess.Popen(
        [*command, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if not os.environ.get("IMAGEWIRE_TEST_SERVER_LOGS") else None,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    handle = ServerProcess(process, "", lines)
    try:
        listening = handle.wait_for_line(f"{name} listening on")
        handle.target = listening.rsplit(" ", 1)[-1]
        if wait_ready:
            handle.wait_for_line(f"{name} ready")
        yield handle
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def script(name: str) -> str:
    """The path of a console script installed beside this interpreter."""
    return os.path.join(os.path.dirname(sys.executable), name)
