"""The client's service config: round_robin, client-side health checking and retries, against real servers."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2
from imagewire.cli import _parser
from imagewire.client import AsyncCaptionClient, CaptionClient, ImagewireError, service_config
from imagewire.client.caption import CaptionCore

from captioner.app import CaptionerApp
from captioner.settings import CaptionerSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.support import solid

SERVICE = "imagewire.caption.v1.CaptionService"


def test_the_service_config_balances_health_checks_and_retries() -> None:
    config = json.loads(service_config(SERVICE))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": SERVICE}
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": SERVICE}]
    assert method["retryPolicy"]["maxAttempts"] == 5 and method["retryPolicy"]["retryableStatusCodes"] == [
        "UNAVAILABLE"]
    assert "retryThrottling" in config


def test_retries_and_health_checks_can_be_turned_off() -> None:
    config = json.loads(service_config(SERVICE, 1, health_check=False))
    assert config == {"loadBalancingConfig": [{"round_robin": {}}]}
    assert json.loads(service_config(SERVICE, 3))["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 3


@pytest.mark.parametrize("attempts", [0, 6, True, 2.0])
def test_max_attempts_outside_one_to_five_is_refused_before_any_call(attempts: object) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        CaptionCore(max_attempts=attempts)


def test_the_cli_turns_retries_and_health_checks_off() -> None:
    args = _parser().parse_args(["caption", "x.png", "--no-retry", "--no-health-check"])
    assert (args.max_attempts, args.health_check) == (1, False)
    args = _parser().parse_args(["models", "--max-attempts", "2"])
    assert (args.max_attempts, args.health_check) == (2, True)


async def unloaded_but_serving(model: str) -> GrpcServer:
    """A replica that says SERVING but answers every call UNAVAILABLE (as one does in the instant between a
    health check and its shutdown): it never loads its model."""
    settings = CaptionerSettings(server=ServerSettings(port=0, models=(model,)))
    metrics = Metrics()
    server = GrpcServer(settings.server, CaptionerApp(settings, metrics), metrics=metrics)
    await server.start()
    for name in ("", SERVICE):
        await server.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server


def unavailable(server: GrpcServer) -> float:
    """The Caption calls ``server`` answered UNAVAILABLE."""
    labels = {"method": f"/{SERVICE}/Caption", "code": "UNAVAILABLE"}
    return server.metrics.registry.get_sample_value("imagewire_requests_total", labels) or 0.0


def failures(target: str, calls: int, **options: object) -> list[ImagewireError]:
    found = []
    with CaptionClient(target, **options) as client:
        for _ in range(calls):
            try:
                client.caption(solid(), max_new_tokens=2)
            except ImagewireError as error:
                found.append(error)
    return found


async def test_a_call_refused_before_it_answers_is_retried_on_another_replica(
    caption_server: GrpcServer, tiny_caption_model: str
) -> None:
    broken = await unloaded_but_serving(tiny_caption_model)
    target = f"ipv4:{caption_server.address},{broken.address}"
    try:
        assert await asyncio.to_thread(failures, target, 8) == []
        refused = await asyncio.to_thread(failures, target, 8, max_attempts=1)
        assert refused and {error.code for error in refused} == {grpc.StatusCode.UNAVAILABLE}
        assert "still loading" in refused[0].message and refused[0].responses_received == 0
        # The first eight calls met the broken replica too, and went on to the other.
        assert unavailable(broken) > len(refused)
    finally:
        await broken.stop(0)


async def test_a_not_serving_replica_gets_no_calls(caption_server: GrpcServer, tiny_caption_model: str) -> None:
    broken = await unloaded_but_serving(tiny_caption_model)
    for name in ("", SERVICE):
        await broken.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        # Without retries every call must land on the healthy replica; it would fail on the other.
        assert await asyncio.to_thread(failures, f"ipv4:{caption_server.address},{broken.address}", 8,
                                       max_attempts=1) == []
        assert unavailable(broken) == 0
    finally:
        await broken.stop(0)


async def test_a_replica_stopped_under_a_burst_of_calls_loses_none(
    caption_server: GrpcServer, tiny_caption_model: str
) -> None:
    settings = CaptionerSettings(server=ServerSettings(port=0, models=(tiny_caption_model,)))
    metrics = Metrics()
    stopping = GrpcServer(settings.server, CaptionerApp(settings, metrics), metrics=metrics)
    await stopping.start()
    await stopping.load()
    async with AsyncCaptionClient(f"ipv4:{caption_server.address},{stopping.address}") as client:
        await asyncio.gather(*(client.caption(solid(), max_new_tokens=2) for _ in range(4)))  # both connected
        burst = [asyncio.create_task(client.caption(solid(), max_new_tokens=2)) for _ in range(200)]
        await asyncio.sleep(0.01)  # the burst is on the wire, much of it not yet started by the servers
        # gRPC's own shutdown would cancel every call received but not started (CANCELLED, never retried);
        # the drain answers them UNAVAILABLE first, and the client retries them on the other replica.
        await stopping.stop(grace=5)
        captions = await asyncio.gather(*burst)
    assert len(captions) == 200 and all(caption.text for caption in captions)
