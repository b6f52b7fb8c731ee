"""Videos through the Envoy front door: streamed as they are decoded (nothing buffers them), the same bytes as a
direct call, cancellation reaching the generation, retries only where they are safe; and connections aged every
second (Envoy's and the clients') without a stream ever being cut."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml
from grpc_health.v1 import health_pb2
from imagewire.client import (
    AnimateEvent,
    AnimateResult,
    AsyncAnimateClient,
    ImagewireError,
    Progress,
    Stage,
    VideoChunk,
)

from animator import tiny
from animator.app import AnimatorApp
from animator.limits import EngineLimits
from animator.settings import AnimatorSettings
from imagewire_serving import errors
from imagewire_serving.frontdoor import KUBERNETES, Envoy, FrontDoor
from imagewire_serving.frontdoor.config import DEPLOY
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.gates import GATE_TIMEOUT_S, wait_until
from tests.support import serving, solid

SERVICE = "imagewire.animate.v1.AnimateService"
PARAMS = {"width": 64, "height": 64, "num_frames": 6, "num_inference_steps": 2, "decode_chunk_size": 2}
LONG = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 50, "decode_chunk_size": 4}
IMAGE = solid(size=(96, 64))
ENVOY_MANIFEST = DEPLOY / "kubernetes" / "envoy.yaml"


def settings() -> AnimatorSettings:
    server = ServerSettings(port=0, device="cpu", models=(str(tiny.ensure_model("tiny")),), max_connection_age_s=1)
    return AnimatorSettings(server=server, limits=EngineLimits(max_num_inference_steps=60))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def animator(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    metrics = Metrics()
    config = settings()
    async with serving(AnimatorApp(config, metrics), metrics, config.server) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def envoy(animator: GrpcServer) -> AsyncIterator[Envoy]:
    front = FrontDoor(captioners=(), animators=(animator.address,), health_interval_s=0.25)
    running = await asyncio.to_thread(Envoy.start, front)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.terminate)


def engine_of(server: GrpcServer) -> Any:
    assert isinstance(server.app, AnimatorApp)
    return server.app.engine()


@contextlib.contextmanager
def after_first_chunk(server: GrpcServer, then: Any) -> Iterator[threading.Event]:
    """Make the model's chunked decode stop after its first chunk of frames and call ``then(release)`` on the
    device thread; the rest of the frames are decoded only if it returns. Yields ``release``."""
    backend = engine_of(server).model("")
    original = backend.decode
    release = threading.Event()

    def decode(latents: Any, params: Any) -> Iterator[Any]:
        chunks = original(latents, params)
        yield next(chunks)
        then(release)
        yield from chunks

    backend.decode = decode
    try:
        yield release
    finally:
        release.set()
        del backend.decode


def wait_for_release(release: threading.Event) -> None:
    if not release.wait(GATE_TIMEOUT_S):
        raise RuntimeError("the test never released the decode")


async def test_a_video_streams_through_envoy_while_it_is_decoded(animator: GrpcServer, envoy: Envoy) -> None:
    events: list[AnimateEvent] = []
    with after_first_chunk(animator, wait_for_release) as release:
        async with AsyncAnimateClient(envoy.target, health_check=False) as client, asyncio.timeout(60):
            async for event in client.animate(IMAGE, seed=3, **PARAMS):
                events.append(event)
                if isinstance(event, VideoChunk) and not release.is_set():
                    # The replica holds the last frames undecoded until this arrives: nothing between buffered it.
                    decoded = max(e.step for e in events if isinstance(e, Progress) and e.stage is Stage.DECODE)
                    assert decoded < PARAMS["num_frames"]
                    release.set()
    async with AsyncAnimateClient(animator.address) as direct:
        expected = [event async for event in direct.animate(IMAGE, seed=3, **PARAMS)]
    video = b"".join(e.data for e in events if isinstance(e, VideoChunk))
    assert video == b"".join(e.data for e in expected if isinstance(e, VideoChunk))
    result = events[-1]
    assert isinstance(result, AnimateResult) and result.sha256 == hashlib.sha256(video).digest()
    assert result == expected[-1]


async def test_cancelling_through_envoy_stops_the_generation_at_the_next_step(
    animator: GrpcServer, envoy: Envoy
) -> None:
    engine = engine_of(animator)
    stopped = engine.stats.runs_stopped
    async with AsyncAnimateClient(envoy.target, health_check=False) as client:
        stream = client.animate(IMAGE, seed=1, **LONG)
        async for event in stream:
            if isinstance(event, Progress) and event.stage is Stage.DENOISE:
                at_cancel = engine.stats.steps
                break
        await stream.aclose()  # the client cancels; Envoy resets the stream to the replica
    await wait_until(lambda: engine.stats.runs_stopped == stopped + 1)
    assert engine.stats.steps - at_cancel <= 3  # of 50


async def test_a_stream_that_fails_after_answering_is_not_retried_and_says_what_arrived(
    animator: GrpcServer, envoy: Envoy
) -> None:
    def fail(release: threading.Event) -> None:
        raise errors.Unavailable("the replica went away")

    engine = engine_of(animator)
    started = engine.stats.runs_started
    received = 0
    with after_first_chunk(animator, fail):
        async with AsyncAnimateClient(envoy.target, health_check=False) as client:
            try:
                async for event in client.animate(IMAGE, seed=4, **PARAMS):
                    received += len(event.data) if isinstance(event, VideoChunk) else 0
            except ImagewireError as error:
                caught = error
    assert caught.code is grpc.StatusCode.UNAVAILABLE and received > 0
    assert caught.bytes_received == received and f"{received} video bytes had arrived" in str(caught)
    assert engine.stats.runs_started == started + 1  # neither the client nor Envoy started it again


async def test_an_animate_refused_before_it_answers_is_retried_on_another_replica(animator: GrpcServer) -> None:
    config = settings()
    metrics = Metrics()
    broken = GrpcServer(config.server, AnimatorApp(config, metrics), metrics=metrics)  # never loaded
    await broken.start()
    for name in ("", SERVICE):
        await broken.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    tiny_call = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1}
    try:
        async with AsyncAnimateClient(f"ipv4:{animator.address},{broken.address}") as client:
            for seed in range(4):
                assert isinstance([e async for e in client.animate(IMAGE, seed=seed, **tiny_call)][-1],
                                  AnimateResult)
        refused = metrics.registry.get_sample_value(
            "imagewire_requests_total", {"method": f"/{SERVICE}/Animate", "code": "UNAVAILABLE"})
        assert refused  # it was tried, and the calls went on to the other replica
    finally:
        await broken.stop(0)


async def test_the_calls_of_a_job_reach_the_replica_that_holds_it(animator: GrpcServer) -> None:
    """Two replicas behind Envoy: Animate, WatchAnimation and CancelAnimation are hashed on the job-id key, so a
    job's later calls find it on whichever replica runs it (the other would answer NOT_FOUND)."""
    config = settings()
    metrics = Metrics()
    tiny_call = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1}
    async with serving(AnimatorApp(config, metrics), metrics, config.server) as second:
        replicas = (animator, second)
        front = FrontDoor(captioners=(), animators=tuple(r.address for r in replicas), health_interval_s=0.25)
        envoy = await asyncio.to_thread(Envoy.start, front)
        try:
            async with AsyncAnimateClient(envoy.target, health_check=False) as client:
                results: dict[str, AnimateResult] = {}
                # New jobs until both replicas hold some (each lands on either: a handful suffices).
                while len(results) < 32 and not all(
                        any(engine_of(r).jobs.find(job) for job in results) for r in replicas):
                    job_id = f"routed-{len(results)}"
                    result = [e async for e in client.animate(IMAGE, seed=1, job_id=job_id, **tiny_call)][-1]
                    assert isinstance(result, AnimateResult)
                    results[job_id] = result
                for job_id, result in results.items():
                    assert sum(engine_of(r).jobs.find(job_id) is not None for r in replicas) == 1
                    watched = [e async for e in client.watch(job_id)]
                    assert watched[-1] == result
                    assert (await client.cancel(job_id)).job_id == job_id
        finally:
            await asyncio.to_thread(envoy.terminate)
    for replica in replicas:
        assert any(engine_of(replica).jobs.find(job) for job in results)


def peer_of(caplog: pytest.LogCaptureFixture, request_id: str) -> str | None:
    """The client address of a logged call (a connection's own port)."""
    for record in caplog.records:
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, dict) and rpc.get("request_id") == request_id:
            return str(rpc["peer"])
    return None


async def test_an_aged_connection_lets_its_video_stream_finish(
    animator: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagewire_serving.interceptors")
    with after_first_chunk(animator, wait_for_release) as release:
        async with AsyncAnimateClient(animator.address) as client:
            await client.list_models(request_id="age-0")
            first = peer_of(caplog, "age-0")
            events: list[AnimateEvent] = []

            async def watch() -> None:
                events.extend([event async for event in client.animate(IMAGE, seed=6, request_id="aged", **PARAMS)])

            video = asyncio.create_task(watch())
            calls = 0
            async with asyncio.timeout(30):
                # The video is held in flight; meanwhile the connection passes its age (1 s) and new calls move.
                while peer_of(caplog, f"age-{calls}") == first:
                    calls += 1
                    await client.list_models(request_id=f"age-{calls}")
                    await asyncio.sleep(0.05)
            assert not video.done()
            release.set()
            await video
    assert peer_of(caplog, "aged") == first  # the whole video came over the aged connection
    video_bytes = b"".join(e.data for e in events if isinstance(e, VideoChunk))
    assert isinstance(events[-1], AnimateResult) and events[-1].sha256 == hashlib.sha256(video_bytes).digest()


def prestop_hook(admin_port: int) -> str:
    """The Envoy pod's preStop script (deploy/kubernetes/envoy.yaml), pointed at a test Envoy's admin port."""
    (deployment,) = [doc for doc in yaml.safe_load_all(ENVOY_MANIFEST.read_text()) if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    shell, flag, script = container["lifecycle"]["preStop"]["exec"]["command"]
    assert (shell, flag) == ("/bin/bash", "-c") and f"127.0.0.1/{KUBERNETES.admin_port}" in script
    return script.replace(f"127.0.0.1/{KUBERNETES.admin_port}", f"127.0.0.1/{admin_port}")


async def test_the_envoy_pods_prestop_hook_drains_and_waits_for_the_video_in_flight(animator: GrpcServer) -> None:
    front = FrontDoor(captioners=(), animators=(animator.address,), health_interval_s=0.25)
    envoy = await asyncio.to_thread(Envoy.start, front)
    try:
        with after_first_chunk(animator, wait_for_release) as release:
            async with AsyncAnimateClient(envoy.target, health_check=False) as client, asyncio.timeout(60):
                stream = aiter(client.animate(IMAGE, seed=7, **PARAMS))
                events = [await anext(stream)]
                while not isinstance(events[-1], VideoChunk):
                    events.append(await anext(stream))
                hook = await asyncio.create_subprocess_exec("bash", "-c", prestop_hook(envoy.front.admin_port))
                # Draining: Envoy's readiness fails, and the hook waits for the video still streaming.
                await wait_until(lambda: envoy.admin_status("/ready") == 503)
                assert hook.returncode is None
                release.set()
                events += [event async for event in stream]
                assert await asyncio.wait_for(hook.wait(), 30) == 0
        assert isinstance(events[-1], AnimateResult)
    finally:
        await asyncio.to_thread(envoy.terminate)
