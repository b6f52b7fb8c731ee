"""Hostile input: random and mutated image bytes and random field values thrown at real server processes.

Shows: no crash (the process is still alive), no hang (every call answers within its deadline), no INTERNAL or
UNKNOWN for client mistakes, and the server healthy and still captioning afterwards. Running with ``-s`` prints
how many cases were tried and which statuses came back.
"""

from __future__ import annotations

import collections
import io
import json
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc
from PIL import Image

from tests.support import ServerProcess, encode, script, server_process

CLIENT_MISTAKES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


def seeds() -> list[bytes]:
    base = Image.new("RGB", (24, 16), (200, 40, 40))
    base.paste((20, 20, 220), (12, 0, 24, 16))
    return [encode(base, "PNG"), encode(base, "JPEG"), encode(base, "GIF"), encode(base, "WEBP"),
            encode(base, "BMP"), encode(base, "TIFF"), encode(base.convert("RGBA"), "PNG")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid image with a few bytes flipped, inserted or removed, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[position:position + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[position:]
    return bytes(data)


images = st.one_of(st.binary(max_size=4096), mutated())


class Tally:
    def __init__(self, service: str) -> None:
        self.service = service
        self.statuses: collections.Counter[str] = collections.Counter()

    def record(self, code: grpc.StatusCode) -> None:
        self.statuses[code.name] += 1

    def report(self) -> str:
        return json.dumps({"service": self.service, "cases": sum(self.statuses.values()),
                           "statuses": dict(self.statuses)})


@pytest.fixture(scope="module")
def captioner_process(tiny_caption_model: str) -> Iterator[ServerProcess]:
    command = [script("imagewire-captioner"), "--model", tiny_caption_model, "--max-new-tokens-limit", "12",
               "--default-max-new-tokens", "4"]
    with server_process(command, name="imagewire-captioner") as server:
        yield server
        assert server.process.poll() is None, "the server died during the fuzz run"
        with grpc.insecure_channel(server.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            good = caption_pb2.CaptionRequest(image=seeds()[0])
            assert caption_pb2_grpc.CaptionServiceStub(channel).Caption(good, timeout=30).text
        assert server.terminate() == 0


def call(stub: caption_pb2_grpc.CaptionServiceStub, request: caption_pb2.CaptionRequest) -> grpc.StatusCode:
    try:
        stub.Caption(request, timeout=30)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_fuzz_caption_images(captioner_process: ServerProcess) -> None:
    tally = Tally("caption: image bytes")
    with grpc.insecure_channel(captioner_process.target) as channel:
        stub = caption_pb2_grpc.CaptionServiceStub(channel)

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(image=images)
        def run(image: bytes) -> None:
            code = call(stub, caption_pb2.CaptionRequest(image=image, max_new_tokens=2))
            tally.record(code)
            assert code in CLIENT_MISTAKES | {grpc.StatusCode.OK}, code

        run()
    print(tally.report())
    assert tally.statuses["INVALID_ARGUMENT"] > 0


def test_fuzz_caption_fields(captioner_process: ServerProcess) -> None:
    tally = Tally("caption: fields")
    image = seeds()[1]
    with grpc.insecure_channel(captioner_process.target) as channel:
        stub = caption_pb2_grpc.CaptionServiceStub(channel)

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            max_new_tokens=st.one_of(st.none(), st.integers(0, 2**32 - 1), st.integers(0, 16)),
            num_beams=st.one_of(st.none(), st.integers(0, 2**32 - 1), st.integers(0, 3)),
            prompt=st.one_of(st.just(""), st.text(max_size=40), st.text(max_size=700)),
            model_id=st.one_of(st.just(""), st.text(max_size=30)),
        )
        def run(max_new_tokens: int | None, num_beams: int | None, prompt: str, model_id: str) -> None:
            request = caption_pb2.CaptionRequest(image=image, prompt=prompt, model_id=model_id)
            if max_new_tokens is not None:
                request.max_new_tokens = max_new_tokens
            if num_beams is not None:
                request.num_beams = num_beams
            code = call(stub, request)
            tally.record(code)
            assert code in CLIENT_MISTAKES | {grpc.StatusCode.OK}, (code, request.max_new_tokens, request.num_beams)

        run()
    print(tally.report())
    assert tally.statuses["OK"] > 0 and tally.statuses["INVALID_ARGUMENT"] > 0


def test_decoder_survives_pathological_images_in_process() -> None:
    """The same mutations straight into the decoder: only InvalidArgument may escape, never anything else."""
    from imagewire_serving.errors import InvalidArgument
    from imagewire_serving.images import decode_image

    @settings(max_examples=400, deadline=None, database=None)
    @given(image=images)
    def run(image: bytes) -> None:
        try:
            decoded = decode_image(image)
        except InvalidArgument:
            return
        assert decoded.mode == "RGB"
        decoded.save(io.BytesIO(), "PNG")  # fully materialised

    run()
