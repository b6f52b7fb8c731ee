"""Jobs over gRPC: WatchAnimation and CancelAnimation through the typed clients, their status codes, the job-id
metadata, and the client cancelling the jobs it started when its caller leaves."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.client import (
    JOB_ID_KEY,
    AnimateClient,
    AsyncAnimateClient,
    ImagewireError,
    JobState,
    JobStatus,
    Preview,
    Progress,
    Stage,
    VideoChunk,
)

from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, engine_of, noise_png
from tests.gates import wait_until

SMALL = {"width": 96, "height": 64, "num_frames": 6, "num_inference_steps": 2, "decode_chunk_size": 2}
LONG = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 60, "decode_chunk_size": 4}


def image() -> bytes:
    return noise_png(1)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits(max_num_frames=16, max_num_inference_steps=60)) as running:
        yield running


def sample(server: GrpcServer, name: str, labels: dict[str, str]) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_watch_and_cancel_through_the_client(server: GrpcServer, tmp_path: Path) -> None:
    resumes = sample(server, "imagewire_job_resumes_total", {"rpc": "watch"})
    async with AsyncAnimateClient(server.address, timeout=120) as client:
        result = await client.animate_to_file(image(), tmp_path / "made.mp4", job_id="svc-1", seed=3, **SMALL)
        watched = await client.watch_to_file("svc-1", tmp_path / "watched.mp4")
        events = [event async for event in client.watch("svc-1", offset=result.total_bytes - 10)]
        cancelled = await client.cancel("svc-1")
    made = (tmp_path / "made.mp4").read_bytes()
    assert (tmp_path / "watched.mp4").read_bytes() == made and watched == result
    assert hashlib.sha256(made).digest() == result.sha256
    assert isinstance(events[0], JobStatus) and events[0].state is JobState.SUCCEEDED and not events[0].created
    assert b"".join(e.data for e in events if isinstance(e, VideoChunk)) == made[-10:]
    assert any(isinstance(e, Preview) for e in events)  # the latest preview is replayed
    assert cancelled.state is JobState.SUCCEEDED  # it had already finished
    assert sample(server, "imagewire_job_resumes_total", {"rpc": "watch"}) == resumes + 2


async def test_job_errors_have_their_status_codes(server: GrpcServer) -> None:
    async with AsyncAnimateClient(server.address, timeout=120) as client:
        events = [event async for event in client.animate(image(), job_id="svc-codes", seed=1, **SMALL)]
        size = events[-1].total_bytes
        cases = [
            (client.watch("nobody-has-this"), grpc.StatusCode.NOT_FOUND, "'nobody-has-this'"),
            (client.watch("svc-codes", offset=size + 1), grpc.StatusCode.OUT_OF_RANGE, f"past the {size} bytes"),
            (client.animate(image(), job_id="svc-codes", seed=2, **SMALL), grpc.StatusCode.FAILED_PRECONDITION,
             "different parameters: seed"),
        ]
        for stream, code, message in cases:
            with pytest.raises(ImagewireError) as caught:
                async for _ in stream:
                    pass
            assert caught.value.code is code and message in caught.value.message
        with pytest.raises(ImagewireError) as caught:  # refused by the client, before anything is sent
            client.watch("bad id!")
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT and "job_id must be" in caught.value.message
        with pytest.raises(ImagewireError) as caught:
            await client.cancel("x" * 500)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in caught.value.field_violations] == ["job_id"]
        assert len(caught.value.message) < 300  # the id is shown cut short


async def test_every_job_call_carries_the_job_id_metadata(server: GrpcServer) -> None:
    seen: list[tuple[bytes, str | None]] = []

    async def record(continuation, details, request):
        seen.append((details.method, dict(details.metadata or ()).get(JOB_ID_KEY)))
        return await continuation(details, request)

    # grpc.aio files each interceptor under one kind of call only.
    class Streams(grpc.aio.UnaryStreamClientInterceptor):
        intercept_unary_stream = staticmethod(record)

    class Unary(grpc.aio.UnaryUnaryClientInterceptor):
        intercept_unary_unary = staticmethod(record)

    class Recording(AsyncAnimateClient):
        def _open(self, target: str, tls: object) -> grpc.aio.Channel:
            return grpc.aio.insecure_channel(target, interceptors=[Streams(), Unary()])

    async with Recording(server.address, timeout=120) as client:
        events = [event async for event in client.animate(image(), seed=1, **SMALL)]
        job_id = events[0].job_id
        [event async for event in client.watch(job_id)]
        await client.cancel(job_id)
    assert len(job_id) == 32  # the client chose it
    assert [key for _, key in seen] == [job_id] * 3
    assert [method.rsplit(b"/", 1)[-1] for method, _ in seen] == [b"Animate", b"WatchAnimation", b"CancelAnimation"]


async def test_leaving_animate_early_cancels_the_job(server: GrpcServer) -> None:
    engine = engine_of(server)
    async with AsyncAnimateClient(server.address, timeout=120) as client:
        stream = client.animate(image(), job_id="svc-left-async", seed=1, **LONG)
        async for event in stream:
            if isinstance(event, Progress) and event.stage is Stage.DENOISE:
                break
        await stream.aclose()
    # Not a detach waiting out its grace period (60 s by default): cancelled at once.
    assert engine.jobs.get("svc-left-async").state.name == "CANCELLED"

    def blocking() -> None:
        with AnimateClient(server.address, timeout=120) as client:
            for event in client.animate(image(), job_id="svc-left-blocking", seed=1, **LONG):
                if isinstance(event, Progress) and event.stage is Stage.DENOISE:
                    break  # the iterator is closed here

    await asyncio.to_thread(blocking)
    assert engine.jobs.get("svc-left-blocking").state.name == "CANCELLED"


async def test_interrupting_a_download_cancels_the_job_and_removes_the_file(server: GrpcServer,
                                                                           tmp_path: Path) -> None:
    engine = engine_of(server)

    def interrupt(event: object) -> None:
        if isinstance(event, Progress) and event.stage is Stage.DENOISE:
            raise KeyboardInterrupt  # what Ctrl-C does to the CLI's progress display

    def blocking() -> None:
        with AnimateClient(server.address, timeout=120) as client, pytest.raises(KeyboardInterrupt):
            client.animate_to_file(image(), tmp_path / "out.mp4", on_event=interrupt, job_id="svc-ctrl-c", **LONG)

    await asyncio.to_thread(blocking)
    assert engine.jobs.get("svc-ctrl-c").state.name == "CANCELLED"
    assert not (tmp_path / "out.mp4").exists()


async def test_the_job_gauges_follow_a_detached_job(server: GrpcServer) -> None:
    engine = engine_of(server)

    def gauge(state: str) -> float:
        return sample(server, "imagewire_jobs", {"state": state})

    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        request = animate_pb2.AnimateRequest(image=image(), job_id="svc-gauge", seed=1, detach_grace_seconds=30,
                                             **LONG)
        call = stub.Animate(request, timeout=60)
        await call.read()
        assert (gauge("active"), gauge("detached")) == (1, 0)
        call.cancel()  # the connection's end: the job is detached, not cancelled
        await wait_until(lambda: gauge("detached") == 1)
        assert gauge("active") == 0 and engine.jobs.get("svc-gauge").state.name == "RUNNING"
        reply = await stub.CancelAnimation(animate_pb2.CancelAnimationRequest(job_id="svc-gauge"), timeout=30)
    assert reply.job.state == animate_pb2.JOB_STATE_CANCELLED and gauge("detached") == 0
