"""Request bytes that are not the method's message (garbage, cut short, invalid UTF-8 in a string field) reach
both servers' every method, health and reflection included: each is answered INVALID_ARGUMENT saying the request
did not parse, never UNKNOWN naming a Python exception, and the server goes on serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server

# A valid tag (field 1, length-delimited) whose length runs past the end, and bytes that are no tag at all.
TRUNCATED = b"\x0a\x40abc"
GARBAGE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"

# Each method, how it is called, and its request's string fields by number (these must hold valid UTF-8).
METHODS = {
    "/imagewire.caption.v1.CaptionService/Caption": ("unary", (2, 3)),
    "/imagewire.caption.v1.CaptionService/ListModels": ("unary", ()),
    "/imagewire.animate.v1.AnimateService/Animate": ("stream", (2, 16, 19, 20)),
    "/imagewire.animate.v1.AnimateService/WatchAnimation": ("stream", (1,)),
    "/imagewire.animate.v1.AnimateService/CancelAnimation": ("unary", (1,)),
    "/imagewire.animate.v1.AnimateService/ListModels": ("unary", ()),
    "/grpc.health.v1.Health/Check": ("unary", (1,)),
    "/grpc.health.v1.Health/Watch": ("stream", (1,)),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ("bidi", (3, 4)),
}


def bad_utf8(number: int) -> bytes:
    """String field ``number`` holding the bytes 0xff 0xfe: not UTF-8."""
    tag, varint = number << 3 | 2, bytearray()
    while tag > 0x7F:
        varint.append(tag & 0x7F | 0x80)
        tag >>= 7
    return bytes([*varint, tag, 2, 0xFF, 0xFE])


def bodies(method: str) -> list[bytes]:
    return [TRUNCATED, GARBAGE, *(bad_utf8(number) for number in METHODS[method][1])]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def animator() -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits(max_num_frames=8, max_num_inference_steps=2)) as running:
        yield running


async def refused(channel: grpc.aio.Channel, method: str, body: bytes) -> None:
    kind = METHODS[method][0]
    raw: Any = channel  # raw bytes, neither serialized nor parsed: the stubs' types expect messages
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if kind == "unary":
            await raw.unary_unary(method)(body, timeout=30)
        elif kind == "stream":
            async for _ in raw.unary_stream(method)(body, timeout=30):
                pass
        else:
            async for _ in raw.stream_stream(method)(iter([body]), timeout=30):
                pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, body, caught.value.details())
    assert "not a valid message" in (caught.value.details() or ""), caught.value.details()


async def still_serving(channel: grpc.aio.Channel) -> None:
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)
    reply = await check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["caption", "animate"])
async def test_unparsable_bytes_are_invalid_argument_on_every_method(service: str, caption_server: GrpcServer,
                                                                     animator: GrpcServer) -> None:
    server = caption_server if service == "caption" else animator
    other = "animate" if service == "caption" else "caption"
    methods = [method for method in METHODS if f".{other}." not in method]
    async with grpc.aio.insecure_channel(server.address) as channel:
        for method in methods:
            for body in bodies(method):
                await refused(channel, method, body)
        await still_serving(channel)
