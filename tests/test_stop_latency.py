"""A deadline or a cancel stops the work within one denoising step or one decode chunk (one decoding step for a
caption batch), through real servers on the tiny models, and the stop says what it was.

The model is held at a gate (tests/gates.py) while the deadline passes or the cancel arrives, so each test knows
exactly which step was under way: after the gate opens, at most that step (or chunk) completes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc

from animator.jobs import Job
from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, engine_of, noise_png
from tests.gates import gate, wait_until
from tests.support import solid

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits()) as running:
        yield running


def job_of(server: GrpcServer, job_id: str) -> Job:
    job = engine_of(server).jobs.find(job_id)
    assert job is not None
    return job


async def test_a_deadline_stops_the_denoising_within_one_step(server: GrpcServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_of(server)
    unet = engine.model("").pipeline.unet
    request = animate_pb2.AnimateRequest(image=noise_png(1), width=64, height=64, num_frames=4,
                                         num_inference_steps=40, detach_grace_seconds=0, job_id="deadline-denoise")
    async with grpc.aio.insecure_channel(server.address) as channel:
        with gate(unet, "forward") as held, caplog.at_level(logging.INFO, logger="animator.engine"):
            call = animate_pb2_grpc.AnimateServiceStub(channel).Animate(request, timeout=1.0)
            await held.wait_entered()  # the first step's UNet call, held: the deadline passes meanwhile
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            job = job_of(server, "deadline-denoise")
            await wait_until(lambda: job.stop_requested)  # the server saw its only watcher go
            steps = engine.stats.steps
            held.release()
            await wait_until(lambda: job.state.finished)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert engine.stats.steps - steps <= 1 and len(held.calls) == 1  # the held step ends; no other starts
    assert "the last call watching the job passed its deadline" in str(job.error)
    assert "passed its deadline" in caplog.text


async def test_a_cancel_stops_the_decode_within_one_chunk(server: GrpcServer) -> None:
    engine = engine_of(server)
    vae = engine.model("").pipeline.vae
    request = animate_pb2.AnimateRequest(image=noise_png(2), width=64, height=64, num_frames=8, decode_chunk_size=2,
                                         num_inference_steps=1, job_id="cancel-decode")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        with gate(vae, "decode") as held:
            call = stub.Animate(request, timeout=60)
            await held.wait_entered()  # the first of four chunks, held
            cancel = stub.CancelAnimation(animate_pb2.CancelAnimationRequest(job_id="cancel-decode"), timeout=60)
            job = job_of(server, "cancel-decode")
            await wait_until(lambda: job.stop_requested)
            held.release()
            reply = await cancel
        decoded = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in call:
                if event.HasField("progress") and event.progress.stage == animate_pb2.STAGE_DECODE:
                    decoded.append(event.progress.step)
    assert caught.value.code() is grpc.StatusCode.CANCELLED
    assert reply.job.state == animate_pb2.JOB_STATE_CANCELLED
    assert len(held.calls) == 1 and decoded[-1] <= 2  # the held chunk (2 frames of 8) and no other
    assert engine.stats.runs_stopped >= 1


async def test_a_caption_deadline_stops_the_batch_at_the_next_decoding_step(caption_server: GrpcServer) -> None:
    app = caption_server.app
    engine = app.engine()
    backend = engine.batcher("").backend

    def deadlines() -> float:
        return caption_server.metrics.registry.get_sample_value("imagewire_requests_total", {
            "method": "/imagewire.caption.v1.CaptionService/Caption", "code": "DEADLINE_EXCEEDED"}) or 0.0

    before, stopped = deadlines(), engine.stats.runs_stopped
    async with grpc.aio.insecure_channel(caption_server.address) as channel:
        stub = caption_pb2_grpc.CaptionServiceStub(channel)
        with gate(backend) as held:
            call = stub.Caption(caption_pb2.CaptionRequest(image=solid(), max_new_tokens=8), timeout=1.0)
            await held.wait_entered()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            steps = engine.stats.steps
            held.release()
            await wait_until(lambda: engine.stats.runs_stopped == stopped + 1)
    # Logged and counted as a deadline, not a cancel, once the server has finished the call.
    await wait_until(lambda: deadlines() == before + 1)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert engine.stats.steps - steps <= 1  # stopped at its first decoding step
    assert await asyncio.wait_for(stub_ok(caption_server), 60)


async def stub_ok(server: GrpcServer) -> bool:
    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await caption_pb2_grpc.CaptionServiceStub(channel).Caption(
            caption_pb2.CaptionRequest(image=solid()), timeout=30)
    return reply.text is not None
