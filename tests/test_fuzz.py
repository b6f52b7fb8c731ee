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
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc
from PIL import Image

from imagewire_serving.launcher import ServerProcess, launch
from tests.support import encode, script

CLIENT_MISTAKES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}


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
    with launch(command, name="imagewire-captioner") as server:
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


@pytest.fixture(scope="module")
def animator_process() -> Iterator[ServerProcess]:
    # Tight operator bounds keep every request the fuzzer gets accepted cheap on a CPU.
    command = [script("imagewire-animator"), "--max-num-frames", "4", "--max-num-inference-steps", "2",
               "--max-pixels-per-frame", str(64 * 64), "--max-queue", "64"]
    with launch(command, name="imagewire-animator") as server:
        yield server
        assert server.process.poll() is None, "the server died during the fuzz run"
        with grpc.insecure_channel(server.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert last_event(channel, small_request(seeds()[0])) == "result"
        assert server.terminate() == 0


def small_request(image: bytes) -> animate_pb2.AnimateRequest:
    return animate_pb2.AnimateRequest(image=image, width=64, height=64, num_frames=2, num_inference_steps=1)


def last_event(channel: grpc.Channel, request: animate_pb2.AnimateRequest) -> str:
    kinds = [r.WhichOneof("event") for r in animate_pb2_grpc.AnimateServiceStub(channel).Animate(request, timeout=60)]
    return kinds[-1] if kinds else ""


def animate_status(channel: grpc.Channel, request: animate_pb2.AnimateRequest) -> grpc.StatusCode:
    try:
        last = last_event(channel, request)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    assert last == "result", f"a successful stream must end with its result, not {last!r}"
    return grpc.StatusCode.OK


def test_fuzz_animate_images(animator_process: ServerProcess) -> None:
    tally = Tally("animate: image bytes")
    with grpc.insecure_channel(animator_process.target) as channel:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(image=images)
        def run(image: bytes) -> None:
            code = animate_status(channel, small_request(image))
            tally.record(code)
            assert code in CLIENT_MISTAKES | {grpc.StatusCode.OK}, code

        run()
    print(tally.report())
    assert tally.statuses["INVALID_ARGUMENT"] > 0


def test_fuzz_animate_fields(animator_process: ServerProcess) -> None:
    tally = Tally("animate: fields")
    image = seeds()[0]
    anything = st.one_of(st.none(), st.integers(0, 2**32 - 1))
    floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))
    with grpc.insecure_channel(animator_process.target) as channel:

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            width=st.one_of(anything, st.sampled_from([8, 32, 63, 64])),
            height=st.one_of(anything, st.sampled_from([8, 32, 64])),
            num_frames=st.one_of(anything, st.integers(0, 5)),
            fps=st.one_of(anything, st.integers(0, 60)),
            motion_bucket_id=st.one_of(anything, st.integers(0, 1100)),
            noise_aug_strength=floats,
            num_inference_steps=st.one_of(anything, st.integers(0, 3)),
            seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
            decode_chunk_size=st.one_of(anything, st.integers(0, 5)),
            min_guidance_scale=floats,
            max_guidance_scale=floats,
            video_format=st.integers(0, 6),
            model_id=st.one_of(st.just(""), st.text(max_size=20)),
            safety_check=st.booleans(),
            preview_every=st.one_of(anything, st.integers(0, 3)),
            detach_grace_seconds=floats,
            # Ids from a small alphabet, so that some repeat with other parameters (FAILED_PRECONDITION).
            job_id=st.one_of(st.just(""), st.text(alphabet="ab/é ", max_size=3), st.text(max_size=200)),
        )
        def run(video_format: int, model_id: str, safety_check: bool, job_id: str,
                **fields: float | int | None) -> None:
            request = animate_pb2.AnimateRequest(image=image, model_id=model_id, safety_check=safety_check,
                                                 format=video_format, job_id=job_id)  # type: ignore[arg-type]
            for name, value in fields.items():
                if value is not None:
                    setattr(request, name, value)
            code = animate_status(channel, request)
            tally.record(code)
            assert code in CLIENT_MISTAKES | {grpc.StatusCode.OK}, (code, request)

        run()
    print(tally.report())
    assert tally.statuses["INVALID_ARGUMENT"] > 0
