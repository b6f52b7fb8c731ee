"""Property-based fuzz of both services through real servers on the tiny models.

Requests are drawn from the whole space at once (tests/fuzzing.py): images of every shape, mode and format, whole
or broken, and every request field from the bounds ListModels reports, jointly with the relations between fields.
Whatever comes: never INTERNAL or UNKNOWN; a failure is a documented status with a message (INVALID_ARGUMENT
naming fields); an OK caption is text; an OK video decodes to exactly the frames and size asked for; and the
server is still serving afterwards. ``IMAGEWIRE_FUZZ_EXAMPLES=N`` runs N times the CI budget; the status tallies
are printed in pytest's summary.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import av
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc

from animator import tiny as tiny_videos
from animator.app import AnimatorApp
from animator.interpolation import output_frames
from animator.limits import EngineLimits as AnimateLimits
from animator.settings import AnimatorSettings
from captioner.app import CaptionerApp
from captioner.limits import EngineLimits as CaptionLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServerSettings
from tests import fuzzing
from tests.families import FAMILIES, model_dir
from tests.fuzzing import budget, default_of, requests, scaled_timeout, served_in_thread, status_of, tally
from tests.support import serving, solid

# What a request may fail with (the protos list them per RPC): the rest, INTERNAL and UNKNOWN above all, never.
CAPTION_FAILURES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
ANIMATE_FAILURES = CAPTION_FAILURES | {grpc.StatusCode.FAILED_PRECONDITION}
# Small limits keep every request the fuzz gets accepted cheap; the strategies read them from ListModels.
CAPTION_LIMITS = CaptionLimits(max_new_tokens_limit=6, num_beams_limit=2, max_image_pixels=8000)
ANIMATE_LIMITS = AnimateLimits(max_pixels_per_frame=64 * 128, max_num_frames=9, max_num_inference_steps=2,
                               detach_grace=1, max_detach_grace=5)


def served(app: Any) -> Iterator[str]:
    """Serve ``app`` on its own event loop (tests/fuzzing.py) for the module; its address. Serving at the end."""
    with served_in_thread(lambda: serving(app, app.metrics, app.settings.server)) as server:
        yield server.address
        serving_health(server.address)


def failed(service: str, error: grpc.RpcError, allowed: set[grpc.StatusCode], message: Any) -> None:
    """A failed case: tallied, one of the ``allowed`` codes, its field violations naming fields of ``message``."""
    code, fields = status_of(error)
    tally(service, code)
    assert code in allowed, (code, error.details())
    assert set(fields) <= {field.name for field in message.DESCRIPTOR.fields}, fields


def serving_health(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# Captions -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caption_target() -> Iterator[str]:
    """A captioner serving every caption family (tests/families.py), tiny, on the CPU: each case picks one."""
    models = tuple(model_dir(family) for family in FAMILIES)
    yield from served(CaptionerApp(CaptionerSettings(ServerSettings(port=0, device="cpu", models=models),
                                                     CAPTION_LIMITS), Metrics()))


@pytest.fixture(scope="module")
def caption_stub(caption_target: str) -> Iterator[tuple[Any, list[Any]]]:
    with grpc.insecure_channel(caption_target) as channel:
        stub = caption_pb2_grpc.CaptionServiceStub(channel)
        yield stub, list(stub.ListModels(caption_pb2.ListModelsRequest(), timeout=10).models)


def caption_case(caption_stub: tuple[Any, list[Any]], request: caption_pb2.CaptionRequest) -> None:
    stub, _ = caption_stub
    try:
        reply = stub.Caption(request, timeout=60)
    except grpc.RpcError as error:
        failed("caption", error, CAPTION_FAILURES, caption_pb2.CaptionRequest)
        return
    tally("caption", grpc.StatusCode.OK)
    assert isinstance(reply.text, str) and reply.model_id


@scaled_timeout
def test_fuzz_caption(caption_stub: tuple[Any, list[Any]]) -> None:
    @budget(150)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        caption_case(caption_stub, data.draw(requests(caption_pb2.CaptionRequest, caption_stub[1])))

    run()
    assert {"OK", "INVALID_ARGUMENT"} <= set(fuzzing.TALLIES["caption"])


# Videos -------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def animate_target() -> Iterator[str]:
    """An animator serving every video family, tiny, on the CPU: SVD, and LTX-Video and Wan (prompted families with
    their own grids). Each case picks one."""
    models = tuple(str(tiny_videos.ensure_model(preset)) for preset in ("tiny", "ltx-tiny", "wan-tiny"))
    yield from served(AnimatorApp(AnimatorSettings(ServerSettings(port=0, device="cpu", models=models),
                                                   ANIMATE_LIMITS), Metrics()))


@pytest.fixture(scope="module")
def animate_stub(animate_target: str) -> Iterator[tuple[Any, list[Any]]]:
    with grpc.insecure_channel(animate_target) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        yield stub, list(stub.ListModels(animate_pb2.ListModelsRequest(), timeout=10).models)


def relate(draw: st.DrawFn, values: dict[str, Any], model: Any) -> None:
    """Fields that must agree, drawn together: the guidance ramp's ends, frames and decode chunk, and the frame
    size against the per-frame pixel limit."""
    infos = {info.name: info for info in model.fields}
    if "min_guidance_scale" in infos and draw(st.booleans()):
        low, high = draw(st.sampled_from([(1.0, 1.0), (2.0, 1.0), (20.0, 0.0), (0.0, 20.0), (1.0, 1.001), (3.0, 3.0),
                                          (1.001, 1.0), (0.5, 0.9)]))
        values.update(min_guidance_scale=low, max_guidance_scale=high)
    if draw(st.booleans()):
        frames = values.get("num_frames") or default_of(infos["num_frames"])
        grid = infos["decode_chunk_size"].multiple_of or 1
        values["decode_chunk_size"] = max(0, draw(st.sampled_from([frames, frames - 1, frames + 1, grid, 2 * grid])))
    if draw(st.booleans()):
        grid = infos["width"].multiple_of or 1
        width = draw(st.integers(64 // grid, 256 // grid)) * grid
        height = model.max_pixels_per_frame // width // grid * grid + draw(st.sampled_from([0, 0, grid]))
        values.update(width=width, height=height) if draw(st.booleans()) else values.update(width=height, height=width)


def asked(request: animate_pb2.AnimateRequest, model: Any, name: str) -> Any:
    """The value a request asks for: its own, else the model's default."""
    if request.HasField(name):
        return getattr(request, name)
    return default_of(next(info for info in model.fields if info.name == name))


def check_video(request: animate_pb2.AnimateRequest, events: list[Any], models: list[Any]) -> None:
    """An OK stream ends with its result and carries a video of exactly the frames and size asked for."""
    assert events[-1].WhichOneof("event") == "result"
    header = next(event.header for event in events if event.HasField("header"))
    model = next(m for m in models if m.model_id == header.model_id)
    size = (asked(request, model, "width"), asked(request, model, "height"))
    # Chained segments share their boundary frames; interpolation puts factor - 1 frames between each pair.
    generated = asked(request, model, "segments") * (asked(request, model, "num_frames") - 1) + 1
    frames = output_frames(generated, asked(request, model, "interpolate"))
    assert (header.width, header.height, header.num_frames) == (*size, frames)
    data = b"".join(event.chunk.data for event in events if event.HasField("chunk"))
    assert len(data) == events[-1].result.total_bytes
    decoded = list(av.open(io.BytesIO(data)).decode(video=0))
    assert len(decoded) == frames and all((f.width, f.height) == size for f in decoded)


def animate_case(animate_stub: tuple[Any, list[Any]], request: animate_pb2.AnimateRequest) -> None:
    stub, models = animate_stub
    try:
        events = list(stub.Animate(request, timeout=120))
    except grpc.RpcError as error:
        failed("animate", error, ANIMATE_FAILURES, animate_pb2.AnimateRequest)
        return
    tally("animate", grpc.StatusCode.OK)
    check_video(request, events, models)


@scaled_timeout
def test_fuzz_animate(animate_stub: tuple[Any, list[Any]]) -> None:
    @budget(40)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        animate_case(animate_stub, data.draw(requests(animate_pb2.AnimateRequest, animate_stub[1], relate)))

    run()
    assert {"OK", "INVALID_ARGUMENT"} <= set(fuzzing.TALLIES["animate"])


def test_a_request_leaving_every_field_unset_is_served_under_limits_below_the_defaults(
    animate_stub: tuple[Any, list[Any]],
) -> None:
    """Found by the fuzz: under limits below a model's own defaults (tiny SVD's 128 x 72 frame and 4 steps against
    8192 pixels and 2 steps), a request that set nothing was refused naming fields its caller never set. The
    defaults are brought within the limits (the size keeping its aspect ratio), and ListModels reports them."""
    stub, models = animate_stub
    for model in models:
        fields = {info.name: info for info in model.fields}
        for name, info in fields.items():
            low, high = fuzzing.bounds(info)
            value = default_of(info)
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert (low is None or value >= low) and (high is None or value <= high), (model.family, name)
        width, height = default_of(fields["width"]), default_of(fields["height"])
        assert width * height <= model.max_pixels_per_frame and (model.default_width, model.default_height) == (
            width, height)
        request = animate_pb2.AnimateRequest(image=solid(), model_id=model.model_id)
        check_video(request, list(stub.Animate(request, timeout=120)), models)
    svd = next(model for model in models if model.family == "svd")
    assert (svd.default_width, svd.default_height) == (120, 64)  # 128 x 72 scaled into 8192 pixels, on its grid


@scaled_timeout
def test_decoder_takes_every_drawn_image_or_refuses_it() -> None:
    """The image decoder alone, on more images than the servers see: only InvalidArgument may escape."""
    from imagewire_serving.errors import InvalidArgument
    from imagewire_serving.images import ImageLimits, decode_image

    @budget(300)
    @given(fuzzing.images)
    def run(image: bytes) -> None:
        try:
            decoded = decode_image(image, ImageLimits(max_pixels=8000))
        except InvalidArgument as error:
            assert error.violations and error.violations[0].field == "image"
            return
        assert decoded.mode == "RGB" and decoded.width * decoded.height <= 8000
        decoded.tobytes()  # fully materialised

    run()


# Raw bytes and metadata ------------------------------------------------------------------------------------------


@scaled_timeout
def test_fuzz_raw_request_bytes_are_never_unknown(caption_target: str, animate_target: str) -> None:
    """Request bytes that are not the method's message (cut short, flipped, garbage, invalid UTF-8 in a string
    field), to every method of both servers: a documented status, never UNKNOWN or INTERNAL."""
    valid = {"caption": caption_pb2.CaptionRequest(image=solid(), prompt="a").SerializeToString(),
             "animate": animate_pb2.AnimateRequest(image=solid(), job_id="raw", width=64, height=64,
                                                   num_frames=1).SerializeToString()}
    channels = {"caption": grpc.insecure_channel(caption_target), "animate": grpc.insecure_channel(animate_target)}

    @budget(120)
    @given(st.sampled_from(sorted(fuzzing.METHODS)), st.data())
    def run(method: str, data: st.DataObject) -> None:
        service = "caption" if ".caption." in method else "animate"
        body = data.draw(fuzzing.raw_requests(valid[service] if "ListModels" not in method else b""))
        raw: Any = channels[service]  # bytes in and out: the stubs' types expect messages
        try:
            if fuzzing.METHODS[method] == "unary":
                raw.unary_unary(method)(body, timeout=60)
            else:
                for _ in raw.unary_stream(method)(body, timeout=60):
                    pass
        except grpc.RpcError as error:
            code = error.code()
            tally("raw bytes", code)
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (method, body, error.details())
            return
        tally("raw bytes", grpc.StatusCode.OK)

    try:
        run()
    finally:
        for channel in channels.values():
            channel.close()
    assert "INVALID_ARGUMENT" in fuzzing.TALLIES["raw bytes"]


@scaled_timeout
def test_fuzz_job_ids_and_metadata_never_make_the_client_answer_internal(animate_target: str) -> None:
    """Job ids and metadata of any text (non-ASCII, control characters, long, empty) through the Python client:
    refused by the client naming them (INVALID_ARGUMENT) or answered by the server with a documented status;
    never gRPC's own INTERNAL ("Illegal header value") or UNKNOWN."""
    from imagewire.client import AnimateClient, ImagewireError

    documented = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    with AnimateClient(animate_target) as client:

        @budget(120)
        @given(fuzzing.METADATA_TEXT, st.sampled_from(["watch", "cancel", "request_id", "metadata"]))
        def run(text: str, where: str) -> None:
            try:
                if where == "watch":
                    list(client.watch(text, timeout=10))
                elif where == "cancel":
                    client.cancel(text, timeout=10)
                elif where == "request_id":
                    client.cancel("fuzz-none", request_id=text, timeout=10)
                else:
                    with AnimateClient(animate_target, metadata=[("x-fuzz", text)]) as other:
                        other.cancel("fuzz-none", timeout=10)
                code = grpc.StatusCode.OK
            except ImagewireError as error:
                code = error.code
                assert error.message.strip()
                if code is grpc.StatusCode.INVALID_ARGUMENT:
                    assert error.field_violations, error
            tally("metadata", code)
            assert code in documented, (where, text, code)

        run()
    assert "INVALID_ARGUMENT" in fuzzing.TALLIES["metadata"]


def test_fuzz_leaves_the_servers_serving(caption_stub: tuple[Any, list[Any]], caption_target: str,
                                        animate_target: str) -> None:
    """After the cases above (module order), both servers still answer their health checks, and caption."""
    serving_health(caption_target)
    serving_health(animate_target)
    assert caption_stub[0].Caption(caption_pb2.CaptionRequest(image=solid()), timeout=30).text is not None
