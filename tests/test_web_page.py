"""The web page (examples/web) in Debian's Chromium, through the gRPC-Web front door, against real servers: the
caption of a picked image, the video playing while it is still being generated, and errors shown as messages.

The browser is driven by examples/web/test/drive.mjs (playwright-core, the system browser; nothing downloaded),
one JSON command at a time, so this test decides when the generation may go on: it holds the device worker after
the first decode chunk and only lets it finish once the page's <video> has decoded frames, which proves they were
decoded before the stream's result existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from imagewire.client import AnimateEvent, AsyncAnimateClient, Progress, Stage

from animator.app import AnimatorApp
from animator.limits import EngineLimits
from animator.settings import AnimatorSettings
from captioner.app import CaptionerApp
from captioner.settings import CaptionerSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests import front_door
from tests.gates import GATE_TIMEOUT_S, wait_until
from tests.support import free_port, require, serving, solid

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "examples" / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SAMPLE = ROOT / "client" / "imagewire" / "data" / "sample.png"
SAMPLE_CAPTION = "a blue circle on a pink background"
# Kept after the run (out/ is ignored by git): the page while its video streams.
ARTIFACTS = ROOT / "out" / "test-artifacts"
CAPTION_SERVICE, ANIMATE_SERVICE = "imagewire.caption.v1.CaptionService", "imagewire.animate.v1.AnimateService"
# The embedded shapes-svd's defaults: 8 frames at 64x64.
FRAMES = 8


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on a loopback port: the page's origin."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="static-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Hold:
    """Wraps a backend's ``decode``: once the first decode chunk is taken (its frames encoded and sent), the device
    worker stops before asking for the next until released."""

    def __init__(self, decode: Callable[..., Iterator[Any]]) -> None:
        self._decode = decode
        self.holding = threading.Event()
        self.released = threading.Event()

    def __call__(self, *args: Any) -> Iterator[Any]:
        with contextlib.closing(self._decode(*args)) as chunks:
            yield from itertools.islice(chunks, 1)
            self.holding.set()
            if not self.released.wait(GATE_TIMEOUT_S):
                raise RuntimeError("the test never released the generation")
            yield from chunks


@contextlib.contextmanager
def held(backend: Any) -> Iterator[Hold]:
    hold = Hold(backend.decode)
    backend.decode = hold
    try:
        yield hold
    finally:
        hold.released.set()
        del backend.decode


class Browser:
    """The page in Chromium, through examples/web/test/drive.mjs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def do(self, command: str, **args: object) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write((json.dumps({"do": command, **args}) + "\n").encode())
        await self._process.stdin.drain()
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=120)
        assert line, f"the browser driver exited: {await self._stderr()}"
        reply = json.loads(line)
        assert reply["ok"], (command, args, reply)
        assert not reply["pageErrors"], reply["pageErrors"]  # errors are messages on the page, never uncaught
        return reply

    async def _stderr(self) -> str:
        assert self._process.stderr is not None
        return (await self._process.stderr.read()).decode(errors="replace")[-4000:]


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    process = await asyncio.create_subprocess_exec(
        "node", str(WEB / "test" / "drive.mjs"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "CHROMIUM": str(CHROMIUM)})
    try:
        yield Browser(process)
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.fixture(scope="module")
def page_bundle(typescript_client: Path) -> Path:
    """The page's bundle, built from the current sources (type-checked, then bundled by esbuild)."""
    require(shutil.which("node") is not None and (WEB / "node_modules" / ".bin" / "esbuild").exists(),
            "needs node and `npm ci` in examples/web (make setup does it where npm exists)")
    require(CHROMIUM.exists(), f"needs Debian's chromium at {CHROMIUM} (.ci/run installs it: apt-get install chromium)")
    build = subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    return WEB / "dist" / "main.js"


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[tuple[GrpcServer, GrpcServer, AnimatorApp]]:
    """Both servers on their embedded shapes models, the animator with a queue of one (and its app, whose backend
    the test holds): the page shows the sample's caption and its circle moving."""
    captions = CaptionerSettings(server=ServerSettings(port=0))
    videos = AnimatorSettings(server=ServerSettings(port=0, device="cpu"), limits=EngineLimits(max_queue=1))
    caption_metrics, video_metrics = Metrics(), Metrics()
    animator_app = AnimatorApp(videos, video_metrics)
    async with (serving(CaptionerApp(captions, caption_metrics), caption_metrics, captions.server) as captioner,
                serving(animator_app, video_metrics, videos.server) as animator):
        yield captioner, animator, animator_app


async def drain(stream: AsyncIterator[AnimateEvent], seen: list[AnimateEvent]) -> None:
    async for event in stream:
        seen.append(event)


async def test_the_page_captions_and_plays_the_video_while_it_streams(page_bundle: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with servers() as (captioner, animator, animator_app):
        upstreams = {CAPTION_SERVICE: captioner.address, ANIMATE_SERVICE: animator.address}
        async with contextlib.AsyncExitStack() as stack:
            origin = stack.enter_context(static_site(WEB))
            api = await stack.enter_async_context(front_door.grpc_web_front_door(upstreams, allow_origin=origin))
            backend = animator_app.engine().backends[0]
            async with browser() as page:
                # Decoded 4 frames at a time (the model's default is all 8 at once), so the page has frames to
                # show while the rest are still to come.
                await page.do("open", url=f"{origin}/index.html?api={api}&decode_chunk_size=4")
                shown = await page.do("pick", path=str(SAMPLE))
                assert (shown["captionState"], shown["caption"], shown["error"]) == ("done", SAMPLE_CAPTION, "")

                with held(backend) as hold:
                    shown = await page.do("animate")
                    # Decoded frames on the page while the generation cannot pass the hold: its result does not
                    # exist yet (the worker reaches the hold just after sending the first chunk's bytes).
                    assert shown["frames"] > 0 and shown["animation"] == "running", shown
                    assert await asyncio.to_thread(hold.holding.wait, GATE_TIMEOUT_S)
                    assert 0 < shown["progress"] < 1
                    assert re.fullmatch(rf"(De|En)coding frames \d/{FRAMES}", shown["status"]), shown
                    await page.do("screenshot", path=str(ARTIFACTS / "web-page-mid-stream.png"))
                    assert (ARTIFACTS / "web-page-mid-stream.png").read_bytes().startswith(b"\x89PNG")
                    hold.released.set()
                    shown = await page.do("finish", frames=FRAMES)
                assert shown["animation"] == "done" and shown["frames"] >= FRAMES and shown["progress"] == 1
                assert shown["status"].startswith(f"Done: {FRAMES} frames of video/mp4") and not shown["error"]

                await errors_are_messages(page, animator, backend, tmp_path)

            # A browser without H.264 asks for WebM/VP9 and plays that while it streams.
            async with browser() as page:
                await page.do("open", url=f"{origin}/index.html?api={api}", without="video/mp4")
                await page.do("pick", path=str(SAMPLE))
                await page.do("animate")
                shown = await page.do("finish", frames=FRAMES)
                assert shown["animation"] == "done" and shown["frames"] >= FRAMES
                assert shown["status"].startswith(f'Done: {FRAMES} frames of video/webm; codecs="vp09.')


async def errors_are_messages(page: Browser, animator: GrpcServer, backend: object, tmp_path: Path) -> None:
    """A bad image, an overloaded server and a server that is down each show a message on the page."""
    not_an_image = tmp_path / "not-an-image.png"
    not_an_image.write_bytes(b"this is text")
    shown = await page.do("pick", path=str(not_an_image))
    assert shown["captionState"] == "error"
    assert shown["error"].startswith("The server refused the request: image is not a decodable")

    # Overloaded: one generation held on the device and one waiting fill the queue of one.
    await page.do("pick", path=str(SAMPLE))
    running: list[AnimateEvent] = []
    waiting: list[AnimateEvent] = []
    with held(backend) as hold:
        async with AsyncAnimateClient(animator.address, timeout=120) as client:
            first = asyncio.create_task(drain(client.animate(solid(), seed=1), running))
            await asyncio.to_thread(hold.holding.wait, GATE_TIMEOUT_S)
            second = asyncio.create_task(drain(client.animate(solid(), seed=2), waiting))
            await wait_until(lambda: any(isinstance(e, Progress) and e.stage is Stage.QUEUED for e in waiting))
            shown = await page.do("animate")
            assert shown["animation"] == "error" and shown["frames"] == 0
            assert shown["error"].startswith("The server is busy: the generation queue is full")
            hold.released.set()
            await asyncio.wait_for(asyncio.gather(first, second), timeout=60)

    # Down: nothing listens at the API's address.
    await page.do("api", url=f"http://127.0.0.1:{free_port()}")
    shown = await page.do("pick", path=str(SAMPLE))
    assert shown["captionState"] == "error" and shown["error"].startswith("Cannot reach the server at http://127.0.0.1:")
