"""The Envoy front door's configuration (one template: the tests' and Kubernetes'), and what Envoy does with it in
front of a real captioner: gRPC, gRPC-Web from a browser (with its CORS preflight), the stats listener."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from imagewire.caption.v1 import caption_pb2
from imagewire.client import AsyncCaptionClient

from imagewire_serving.frontdoor import KUBERNETES, Envoy, FrontDoor, configmap, render
from imagewire_serving.frontdoor.config import CONFIG_KEY, CONFIGMAP
from imagewire_serving.frontdoor.process import envoy_binary
from imagewire_serving.server import GrpcServer
from tests.gates import wait_until
from tests.support import solid

CAPTION_PATH = "/imagewire.caption.v1.CaptionService/Caption"
ORIGIN = "https://app.example"


def test_the_committed_configmap_is_the_rendered_template() -> None:
    assert CONFIGMAP.read_text() == configmap(), "run: python -m imagewire_serving.frontdoor --configmap"
    assert yaml.safe_load(CONFIGMAP.read_text())["data"][CONFIG_KEY] == render(KUBERNETES)


@pytest.mark.parametrize("front", [KUBERNETES, FrontDoor(captioners=("127.0.0.1:1", "127.0.0.1:2"), animators=())],
                         ids=["kubernetes", "loopback"])
def test_envoy_accepts_the_rendered_configuration(front: FrontDoor, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render(front))
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Deprecated" not in done.stdout + done.stderr


@pytest.mark.parametrize("origin", ["", "https://a.example'", "(unclosed", "https://a\nb"])
def test_an_allowed_origin_must_be_a_quotable_regular_expression(origin: str) -> None:
    with pytest.raises(ValueError, match="allow_origin"):
        render(FrontDoor(captioners=(), animators=("127.0.0.1:1",), allow_origin=origin))


def test_an_endpoint_must_name_its_port() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        render(FrontDoor(captioners=("captioner",), animators=()))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def envoy(caption_server: GrpcServer) -> AsyncIterator[Envoy]:
    # Started off the event loop: its first health checks need the in-process server to answer.
    front = FrontDoor(captioners=(caption_server.address,), animators=(), health_interval_s=0.25)
    running = await asyncio.to_thread(Envoy.start, front)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.terminate)


async def test_grpc_through_envoy_keeps_the_request_id(envoy: Envoy) -> None:
    async with AsyncCaptionClient(envoy.target, health_check=False) as client:
        caption = await client.caption(solid(), request_id="through-envoy-1")
        assert caption.text
    await wait_until(lambda: any('"request_id":"through-envoy-1"' in line and CAPTION_PATH in line
                                 for line in envoy.access_log()))


def grpc_web(path: str, message: bytes, envoy: Envoy) -> tuple[dict[str, str], list[tuple[int, bytes]]]:
    """One gRPC-Web call as a browser makes it: HTTP/1.1 POST of a length-prefixed message; returns the response
    headers and its frames (flags, payload): data frames (0x00), then the trailers frame (0x80)."""
    request = urllib.request.Request(
        f"http://{envoy.target}{path}", data=b"\x00" + struct.pack(">I", len(message)) + message, method="POST",
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN,
                 "x-user-agent": "grpc-web-javascript/0.1", "x-request-id": "from-a-browser"})
    with urllib.request.urlopen(request, timeout=30) as response:
        headers = {key.lower(): value for key, value in response.headers.items()}
        body = response.read()
    frames = []
    while body:
        flags, length = body[0], struct.unpack(">I", body[1:5])[0]
        frames.append((flags, body[5 : 5 + length]))
        body = body[5 + length :]
    return headers, frames


async def test_a_grpc_web_call_through_envoy(envoy: Envoy, caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as direct:
        expected = await direct.caption(solid())
    message = caption_pb2.CaptionRequest(image=solid()).SerializeToString()
    headers, frames = await asyncio.to_thread(grpc_web, CAPTION_PATH, message, envoy)
    assert headers["content-type"] == "application/grpc-web+proto"
    assert headers["access-control-allow-origin"] == ORIGIN
    assert {"grpc-status", "grpc-message", "x-request-id"} <= set(headers["access-control-expose-headers"].split(", "))
    assert headers["x-request-id"] == "from-a-browser"
    (data_flags, data), (trailer_flags, trailers) = frames
    assert (data_flags, trailer_flags) == (0x00, 0x80)
    assert caption_pb2.CaptionResponse.FromString(data).text == expected.text
    assert b"grpc-status:0" in trailers


async def test_a_grpc_web_error_reaches_the_browser(envoy: Envoy) -> None:
    message = caption_pb2.CaptionRequest(image=b"not an image").SerializeToString()
    headers, frames = await asyncio.to_thread(grpc_web, CAPTION_PATH, message, envoy)
    # A trailers-only answer: the status is in the headers, which the browser may read (exposed).
    assert headers.get("grpc-status") == "3" and "image" in headers["grpc-message"]
    assert frames == []


def preflight(envoy: Envoy) -> dict[str, str]:
    request = urllib.request.Request(
        f"http://{envoy.target}{CAPTION_PATH}", method="OPTIONS",
        headers={"origin": ORIGIN, "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type,x-grpc-web,x-imagewire-job-id,traceparent"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return {key.lower(): value for key, value in response.headers.items()}


async def test_envoy_answers_the_browsers_cors_preflight(envoy: Envoy) -> None:
    headers = await asyncio.to_thread(preflight, envoy)
    assert headers["access-control-allow-origin"] == ORIGIN
    allowed = {name.strip() for name in headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-grpc-web", "x-imagewire-job-id", "traceparent"} <= allowed


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


async def test_the_stats_listener_serves_metrics_and_readiness_only(envoy: Envoy) -> None:
    status, metrics = await asyncio.to_thread(fetch, envoy.stats_url + "/stats/prometheus")
    assert status == 200 and 'envoy_cluster_upstream_rq_total{envoy_cluster_name="captioner"}' in metrics
    assert await asyncio.to_thread(fetch, envoy.stats_url + "/ready") == (200, "LIVE\n")
    # The admin interface's other pages (and its POST endpoints) stay on 127.0.0.1 of the pod.
    assert (await asyncio.to_thread(fetch, envoy.stats_url + "/clusters"))[0] == 404
