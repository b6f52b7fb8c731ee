"""The shared serving runtime through real servers: auth, TLS, metrics, logs, overload, draining."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import urllib.request
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc
from imagewire.client import AsyncCaptionClient, CaptionClient, ImagewireError, TlsConfig

from captioner.app import CaptionerApp
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.certs import make_certs
from tests.gates import gate, wait_until
from tests.support import serving, solid

pytestmark = pytest.mark.asyncio(loop_scope="session")


def captioner(model: str, **server: object) -> tuple[CaptionerApp, Metrics, ServerSettings]:
    settings = CaptionerSettings(server=ServerSettings(port=0, models=(model,), **server),
                                 limits=EngineLimits(default_max_new_tokens=4))
    metrics = Metrics()
    return CaptionerApp(settings, metrics), metrics, settings.server


async def test_bearer_token_is_required_but_health_stays_open(tiny_caption_model: str) -> None:
    app, metrics, settings = captioner(tiny_caption_model, auth_token="s3cret")
    async with serving(app, metrics, settings) as server:
        for token in (None, "wrong"):
            async with AsyncCaptionClient(server.address, auth_token=token) as client:
                with pytest.raises(ImagewireError) as caught:
                    await client.caption(solid())
                assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(ImagewireError) as caught:
                    await client.list_models()
                assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
        async with AsyncCaptionClient(server.address, auth_token="s3cret") as client:
            assert (await client.caption(solid())).text
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_tls_and_mutual_tls(tiny_caption_model: str, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    app, metrics, settings = captioner(tiny_caption_model, tls_cert=certs.server_cert, tls_key=certs.server_key)
    async with serving(app, metrics, settings) as server:
        async with AsyncCaptionClient(server.address, tls=TlsConfig(ca_cert=certs.ca)) as client:
            assert (await client.caption(solid())).text
        async with AsyncCaptionClient(server.address, tls=TlsConfig(ca_cert=certs.other_ca), timeout=5) as client:
            with pytest.raises(ImagewireError) as caught:
                await client.caption(solid())
            assert caught.value.code is grpc.StatusCode.UNAVAILABLE  # the server's certificate is not trusted

    app, metrics, settings = captioner(tiny_caption_model, tls_cert=certs.server_cert, tls_key=certs.server_key,
                                       tls_client_ca=certs.ca)
    async with serving(app, metrics, settings) as server:
        mutual = TlsConfig(ca_cert=certs.ca, client_cert=certs.client_cert, client_key=certs.client_key)
        async with AsyncCaptionClient(server.address, tls=mutual) as client:
            assert (await client.caption(solid())).text
        async with AsyncCaptionClient(server.address, tls=TlsConfig(ca_cert=certs.ca), timeout=5) as client:
            with pytest.raises(ImagewireError) as caught:
                await client.caption(solid())
            assert caught.value.code is grpc.StatusCode.UNAVAILABLE  # no client certificate, no handshake


def inflight(metrics: Metrics) -> float:
    """Caption RPCs the server is serving now."""
    method = "/imagewire.caption.v1.CaptionService/Caption"
    return metrics.registry.get_sample_value("imagewire_inflight_requests", {"method": method}) or 0.0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_endpoint_shows_counters_moving(tiny_caption_model: str) -> None:
    app, metrics, settings = captioner(tiny_caption_model, metrics_port=0)
    async with serving(app, metrics, settings) as server:
        assert server.metrics_port
        method = "/imagewire.caption.v1.CaptionService/Caption"
        before = await asyncio.to_thread(scrape, server.metrics_port)
        async with AsyncCaptionClient(server.address) as client:
            await asyncio.gather(*(client.caption(solid((i, 9, 9))) for i in range(5)))
            with pytest.raises(ImagewireError):
                await client.caption(b"junk")
        after = await asyncio.to_thread(scrape, server.metrics_port)
    assert sample(after, "imagewire_requests_total", method=method, code="OK") - sample(
        before, "imagewire_requests_total", method=method, code="OK") == 5
    assert sample(after, "imagewire_requests_total", method=method, code="INVALID_ARGUMENT") == 1
    assert sample(after, "imagewire_request_duration_seconds_count", method=method) == 6
    assert sample(after, "imagewire_batch_size_count") >= 1
    assert sample(after, "imagewire_compute_duration_seconds_count") >= 1
    assert sample(after, "imagewire_queue_duration_seconds_count") == 5
    assert sample(after, "imagewire_model_load_seconds") > 0
    assert "imagewire_queue_depth" in after


async def test_one_structured_log_line_per_request_with_the_request_id(
    caption_server: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagewire_serving.interceptors")
    with CaptionClient(caption_server.address) as client:
        await asyncio.to_thread(client.caption, solid(), request_id="trace-77")
    lines = [r for r in caplog.records if getattr(r, "rpc", {}).get("request_id") == "trace-77"]
    assert len(lines) == 1
    rpc = lines[0].rpc
    assert rpc["code"] == "OK" and rpc["method"].endswith("/Caption") and rpc["input_pixels"] == 64 * 48
    assert {"model", "duration_ms", "queue_ms", "compute_ms", "batch_size", "image_bytes"} <= set(rpc)


async def test_overload_is_answered_fast_while_accepted_requests_complete(tiny_caption_model: str) -> None:
    app, metrics, settings = captioner(tiny_caption_model, max_concurrent_rpcs=4)
    # Without client-side health checking: its Watch stream would hold one of the four slots.
    async with serving(app, metrics, settings) as server, AsyncCaptionClient(server.address,
                                                                             health_check=False) as client:
        with gate(app.engine().backends[0]) as held:
            calls = [asyncio.create_task(client.caption(solid((i, i, 0)))) for i in range(4)]
            await held.wait_entered()
            await wait_until(lambda: inflight(metrics) == 4)  # every slot is taken
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ImagewireError) as caught:
                await client.caption(solid())
            rejected_after = loop.time() - started
            held.release()
            results = await asyncio.gather(*calls)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rejected_after < 0.5
    assert all(r.text for r in results)


async def test_drain_finishes_in_flight_calls_and_refuses_new_ones(tiny_caption_model: str) -> None:
    app, metrics, settings = captioner(tiny_caption_model)
    server = GrpcServer(dataclasses.replace(settings, grace_s=30), app, metrics=metrics)
    await server.start()
    await server.load()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = caption_pb2_grpc.CaptionServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        with gate(app.engine().backends[0]) as held:
            in_flight = [stub.Caption(caption_pb2.CaptionRequest(image=solid((i, 0, 0)))) for i in range(3)]
            await held.wait_entered()
            await wait_until(lambda: inflight(metrics) == 3)
            stopping = asyncio.create_task(server.stop())
            # Watchers hear NOT_SERVING, then their stream ends so it does not hold the drain.
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await watch.read() is grpc.aio.EOF
            assert not any(call.done() for call in in_flight)
            held.release()
            responses = await asyncio.gather(*in_flight)
            started = asyncio.get_running_loop().time()
            await stopping
            assert asyncio.get_running_loop().time() - started < 5  # nothing left to wait the 30 s grace for
    assert all(r.text for r in responses)
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await caption_pb2_grpc.CaptionServiceStub(channel).Caption(
                caption_pb2.CaptionRequest(image=solid()), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
