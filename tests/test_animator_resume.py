"""A real connection drop mid-video: the client talks to the animator through a TCP proxy that the test kills and
restarts; the client resumes from its offset and the file equals an uninterrupted run, from one generation."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest_asyncio
from imagewire.client import (
    AnimateClient,
    AnimateEvent,
    AsyncAnimateClient,
    JobStatus,
    Progress,
    Resume,
    Stage,
    VideoChunk,
)

from animator.engine import AnimateEngine
from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, engine_of, noise_png
from tests.gates import Gate, gate
from tests.tcp_proxy import TcpProxy, tcp_proxy

# Several decode chunks, so that a drop after the first chunk falls in the middle of the video.
PARAMS = {"width": 96, "height": 64, "num_frames": 8, "num_inference_steps": 12, "decode_chunk_size": 2,
          "seed": 31}
FAST = Resume(backoff_s=0.05, max_backoff_s=0.2, reconnect_timeout_s=20)


def image() -> bytes:
    return noise_png(7)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits(max_num_frames=16, max_num_inference_steps=60)) as running:
        yield running


def resumes(server: GrpcServer) -> float:
    return server.metrics.registry.get_sample_value("imagewire_job_resumes_total", {"rpc": "watch"}) or 0.0


class Saboteur:
    """Kills the proxy at chosen events of the stream the client sees, and restarts it once the job has moved on
    without anyone watching it.

    The VAE's decode is held at a gate, one chunk let through per drop, so the job cannot end (and the server cannot
    have sent the whole stream) before a drop: every drop cuts a live stream. After a drop the next one waits for
    the client's resumed stream (the server counted the WatchAnimation): events the dead connection had already
    delivered are still read by the client first, and a drop on one of those would cut nothing."""

    def __init__(self, proxy: TcpProxy, decode: Gate, drop_at: list[Callable[[AnimateEvent], bool]],
                 resumed: Callable[[], float]):
        self._proxy = proxy
        self._decode = decode
        self._drop_at = drop_at
        self._resumed = resumed
        self._resumed_at_drop: float | None = None
        self.job_id = ""
        self.restarts: list[asyncio.Task[None]] = []

    def __call__(self, event: AnimateEvent) -> None:
        if isinstance(event, JobStatus):
            self.job_id = event.job_id
        on_new_stream = self._resumed_at_drop is None or self._resumed() > self._resumed_at_drop
        if self._drop_at and on_new_stream and self._drop_at[0](event):
            self._drop_at.pop(0)
            self._resumed_at_drop = self._resumed()
            self._proxy.kill()
            self.restarts.append(asyncio.get_running_loop().create_task(self._restart(last=not self._drop_at)))

    async def _restart(self, *, last: bool) -> None:
        # The generation goes on while the client is cut off: one more chunk decoded, then the proxy is back.
        self._decode.let_through(1)
        await self._decode.wait_entered()
        if last:
            self._decode.release()
        await self._proxy.start()


@contextlib.asynccontextmanager
async def decode_gate(engine: AnimateEngine) -> AsyncIterator[Gate]:
    """The VAE's decode (one call per chunk), held closed for the block."""
    with gate(engine.model("").pipeline.vae, "decode") as held:
        yield held


def first_denoise(event: AnimateEvent) -> bool:
    return isinstance(event, Progress) and event.stage is Stage.DENOISE


def first_chunk(event: AnimateEvent) -> bool:
    return isinstance(event, VideoChunk)


async def test_a_dropped_connection_is_resumed_from_its_offset(server: GrpcServer, tmp_path: Path) -> None:
    engine = engine_of(server)
    async with AsyncAnimateClient(server.address, timeout=120) as direct:
        reference = await direct.animate_to_file(image(), tmp_path / "direct.mp4", **PARAMS)
    started, watched = engine.stats.runs_started, resumes(server)

    async with tcp_proxy(server.port) as proxy, decode_gate(engine) as decode:
        # Dropped twice: while denoising (before any byte), and mid-video after the first chunk.
        saboteur = Saboteur(proxy, decode, [first_denoise, first_chunk], lambda: resumes(server))
        async with AsyncAnimateClient(proxy.address, timeout=120) as client:
            result = await client.animate_to_file(image(), tmp_path / "resumed.mp4", on_event=saboteur,
                                                  resume=FAST, **PARAMS)
        await asyncio.gather(*saboteur.restarts)

    data = (tmp_path / "resumed.mp4").read_bytes()
    assert len(saboteur.restarts) == 2 and proxy.connections >= 3
    assert hashlib.sha256(data).digest() == result.sha256 == reference.sha256
    assert data == (tmp_path / "direct.mp4").read_bytes()
    assert engine.stats.runs_started == started + 1  # one generation for the whole interrupted download
    assert resumes(server) == watched + 2
    assert engine.jobs.get(saboteur.job_id).state.name == "SUCCEEDED"


async def test_the_blocking_client_resumes_too(server: GrpcServer, tmp_path: Path) -> None:
    engine = engine_of(server)
    started = engine.stats.runs_started
    loop = asyncio.get_running_loop()
    async with tcp_proxy(server.port) as proxy, decode_gate(engine) as decode:
        saboteur = Saboteur(proxy, decode, [first_chunk], lambda: resumes(server))
        decode.let_through(1)  # the first chunk, which the drop follows

        def on_event(event: AnimateEvent) -> None:  # the client's thread: the proxy lives on the loop
            asyncio.run_coroutine_threadsafe(_call(saboteur, event), loop).result()

        def download() -> object:
            with AnimateClient(proxy.address, timeout=120) as client:
                return client.animate_to_file(image(), tmp_path / "blocking.mp4", on_event=on_event, resume=FAST,
                                              **{**PARAMS, "seed": 32})

        result = await asyncio.to_thread(download)
        await asyncio.gather(*saboteur.restarts)
    data = (tmp_path / "blocking.mp4").read_bytes()
    assert len(saboteur.restarts) == 1 and proxy.connections >= 2
    assert hashlib.sha256(data).digest() == result.sha256
    assert engine.stats.runs_started == started + 1


async def _call(saboteur: Saboteur, event: AnimateEvent) -> None:
    saboteur(event)
