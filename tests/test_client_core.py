"""The client package without a server: the cores' requests, deadlines and metadata, the result types' parity
with the protos, the video sink, and the CLI's descriptor-derived flags."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import typing
from pathlib import Path

import grpc
import mypy.api
import pytest
from google.protobuf.descriptor import FieldDescriptor
from imagewire import cli
from imagewire._display import progress_display
from imagewire._formats import video_formats
from imagewire._protodata import JsonValue, ProtoData, ProtoEnum, registered
from imagewire.animate.v1 import animate_pb2
from imagewire.caption.v1 import caption_pb2
from imagewire.client import (
    AnimateClient,
    AnimateCore,
    AnimateFields,
    AsyncAnimateClient,
    AsyncCaptionClient,
    CaptionClient,
    CaptionCore,
    CaptionFields,
    ImagewireError,
    VideoSink,
)
from imagewire.client._messages import enum_members, python_type
from imagewire.client.animate import PARAMETERS, animate_request, decode_event
from imagewire.client.animate_types import (
    AnimateModelList,
    AnimateResult,
    Progress,
    Stage,
    VideoChunk,
    VideoFormat,
    VideoHeader,
)
from imagewire.client.caption import Caption, CaptionModelList, caption_request

from tests.support import free_port

BAD_TIMEOUTS = [0, 0.0, -1, math.nan, math.inf, "5", True]
# Every message a client returns; requests (built by the cores) and the stream's oneof envelope are not results.
NOT_RESULTS = {"CaptionRequest", "AnimateRequest", "ListModelsRequest", "AnimateResponse", "WatchAnimationRequest",
               "WatchAnimationResponse", "CancelAnimationRequest"}


# --- result types mirror the protos ---------------------------------------------------------------------------


def test_every_result_message_has_a_dataclass() -> None:
    messages = {
        message.full_name
        for module in (caption_pb2, animate_pb2)
        for message in module.DESCRIPTOR.message_types_by_name.values()
        if message.name not in NOT_RESULTS
    }
    assert set(registered()) == messages


@pytest.mark.parametrize("cls", list(registered().values()), ids=list(registered()))
def test_each_dataclass_has_its_messages_fields_in_order_with_matching_types(cls: type[ProtoData]) -> None:
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    fields = cls.PROTO.DESCRIPTOR.fields
    assert [f.name for f in dataclasses.fields(cls)] == [f.name for f in fields]
    hints = typing.get_type_hints(cls)
    for field in fields:
        hint = hints[field.name]
        if field.is_repeated:
            assert typing.get_origin(hint) is tuple, field.name
            hint = typing.get_args(hint)[0]
        elif field.has_presence and field.message_type is None:  # proto3 `optional`: absent reads as None
            assert type(None) in typing.get_args(hint), field.name
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Value":
            assert hint == JsonValue, field.name
        elif field.message_type is not None:
            assert issubclass(hint, ProtoData) and hint.PROTO.DESCRIPTOR is field.message_type, field.name
        elif field.enum_type is not None:
            assert issubclass(hint, ProtoEnum), field.name
            assert {m.name: m.value for m in hint} == enum_members(field.enum_type), field.name
        else:
            assert hint is python_type(field), field.name


@pytest.mark.parametrize("enum_type", [Stage, VideoFormat])
def test_python_enums_have_the_proto_enums_values(enum_type: type[ProtoEnum]) -> None:
    descriptor = animate_pb2.DESCRIPTOR.enum_types_by_name[enum_type.__name__]
    assert {m.name: m.value for m in enum_type} == enum_members(descriptor)


def test_from_proto_converts_nested_repeated_and_enum_fields() -> None:
    caption = Caption.from_proto(caption_pb2.CaptionResponse(
        text="a red square", model_id="m", batch_size=3,
        usage=caption_pb2.Usage(input_pixels=12, usd_per_input_pixel=0.5, price_usd=6.0)))
    assert (caption.text, caption.model_id, caption.batch_size) == ("a red square", "m", 3)
    assert (caption.usage.input_pixels, caption.usage.usd_per_input_pixel, caption.usage.price_usd) == (12, 0.5, 6.0)
    models = AnimateModelList.from_proto(animate_pb2.ListModelsResponse(
        default_model_id="a", models=[animate_pb2.ModelInfo(model_id="a", max_num_frames=16),
                                      animate_pb2.ModelInfo(model_id="b", safety_checker=True)]))
    assert isinstance(models.models, tuple) and [m.model_id for m in models.models] == ["a", "b"]
    assert models.models[0].max_num_frames == 16 and models.models[1].safety_checker
    with pytest.raises(dataclasses.FrozenInstanceError):
        models.default_model_id = "b"
    assert CaptionModelList.from_proto(caption_pb2.ListModelsResponse()) == CaptionModelList((), "")


def test_stream_events_decode_to_their_dataclasses() -> None:
    progress = decode_event(animate_pb2.AnimateResponse(progress=animate_pb2.Progress(stage=3, step=2, total=5)))
    assert progress == Progress(Stage.DENOISE, 2, 5, 0, 0) and progress.stage is Stage.DENOISE
    header = decode_event(animate_pb2.AnimateResponse(header=animate_pb2.VideoHeader(mime_type="video/mp4", seed=9)))
    assert isinstance(header, VideoHeader) and (header.mime_type, header.seed) == ("video/mp4", 9)
    chunk = decode_event(animate_pb2.AnimateResponse(chunk=animate_pb2.VideoChunk(data=b"abc", offset=4)))
    assert chunk == VideoChunk(b"abc", 4)
    result = decode_event(animate_pb2.AnimateResponse(result=animate_pb2.AnimateResult(
        total_bytes=3, usage=animate_pb2.Usage(output_pixels=7))))
    assert isinstance(result, AnimateResult) and result.total_bytes == 3 and result.usage.output_pixels == 7
    # A stage number from a newer server reads as UNSPECIFIED rather than failing the stream.
    assert decode_event(animate_pb2.AnimateResponse(progress=animate_pb2.Progress(stage=42))).stage is Stage.UNSPECIFIED
    with pytest.raises(ImagewireError) as caught:
        decode_event(animate_pb2.AnimateResponse())
    assert caught.value.code is grpc.StatusCode.INTERNAL


# --- requests -------------------------------------------------------------------------------------------------


def test_parameters_are_exactly_the_requests_optional_scalar_fields() -> None:
    names = {field.name for field in PARAMETERS}
    assert {"width", "num_frames", "seed", "noise_aug_strength", "max_guidance_scale"} <= names
    request = animate_request(b"img")
    for field in animate_pb2.AnimateRequest.DESCRIPTOR.fields:
        assert (field.name in names) == (field.has_presence and field.message_type is None), field.name
    assert not any(request.HasField(name) for name in names)  # all absent: the model's defaults


def test_animate_request_sets_only_the_given_fields() -> None:
    request = animate_request(b"img", model_id="m", num_frames=6, noise_aug_strength=0.25, seed=None,
                              format=VideoFormat.WEBM_VP9, safety_check=True)
    assert (request.image, request.model_id, request.num_frames, request.noise_aug_strength) == (b"img", "m", 6, 0.25)
    assert request.format == animate_pb2.VIDEO_FORMAT_WEBM_VP9 and request.safety_check
    assert request.HasField("num_frames") and not request.HasField("seed") and not request.HasField("width")
    with pytest.raises(TypeError, match="num_frame"):
        animate_request(b"img", num_frame=6)
    with pytest.raises(TypeError):
        animate_request(b"img", width=1.5)  # protobuf checks the field's type


# A caller's code as a type checker sees it: two mistakes, and one call as it should be.
TYPED_CALLER = """
from imagewire.client import AnimateClient, CaptionClient, VideoFormat

with AnimateClient("127.0.0.1:1") as videos, CaptionClient("127.0.0.1:2") as captions:
    videos.animate_to_file(b"png", "out.mp4", num_frame=9)
    captions.caption(b"png", num_beams="2")
    videos.animate_to_file(b"png", "out.webm", format=VideoFormat.WEBM_VP9, num_frames=9, seed=None, timeout=5.0)
"""


def test_the_keyword_arguments_are_typed_from_the_protos(tmp_path: Path) -> None:
    """Each request's keyword arguments are its fields but the image (generated from the protos): mypy rejects a
    misspelled field and a value of the wrong type, and takes the right ones with the call's options."""
    for fields, message in ((AnimateFields, animate_pb2.AnimateRequest), (CaptionFields, caption_pb2.CaptionRequest)):
        assert set(fields.__annotations__) == {field.name for field in message.DESCRIPTOR.fields} - {"image"}
    caller = tmp_path / "caller.py"
    caller.write_text(TYPED_CALLER)
    report, _, status = mypy.api.run(["--strict", "--cache-dir", str(tmp_path / "cache"), str(caller)])
    errors = [line for line in report.splitlines() if ": error:" in line]
    assert status == 1 and len(errors) == 2, report
    assert 'caller.py:5: error: Unexpected keyword argument "num_frame"' in errors[0]
    assert 'caller.py:6: error: Argument "num_beams"' in errors[1] and '"int | None"' in errors[1]


def test_caption_request_reads_a_path_and_leaves_unset_options_absent(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png bytes")
    request = caption_request(tmp_path / "a.png", prompt="a picture of", max_new_tokens=5)
    assert (request.image, request.prompt, request.max_new_tokens) == (b"png bytes", "a picture of", 5)
    assert request.HasField("max_new_tokens") and not request.HasField("num_beams")
    with pytest.raises(TypeError, match="beams"):
        caption_request(b"x", beams=2)


# --- deadlines, request ids, metadata -------------------------------------------------------------------------


def test_default_deadlines_and_per_call_overrides() -> None:
    captions, animations = CaptionCore(), AnimateCore()
    assert captions.caption(b"x").options.timeout == 30.0 and captions.list_models().options.timeout == 30.0
    assert animations.animate(b"x").options.timeout == 900.0
    assert animations.list_models().options.timeout == 30.0  # a control call, not the stream's deadline
    assert AnimateCore(timeout=5).list_models().options.timeout == 5.0  # never longer than the main call's
    assert AnimateCore(control_timeout=2).list_models().options.timeout == 2.0
    assert animations.animate(b"x", timeout=0.25).options.timeout == 0.25
    assert animations.list_models(timeout=120).options.timeout == 120.0


@pytest.mark.parametrize("bad", BAD_TIMEOUTS, ids=repr)
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        CaptionCore().caption(b"x", timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        AnimateCore().list_models(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        CaptionClient("127.0.0.1:1", timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        AnimateCore(control_timeout=bad)


def test_call_options_carry_the_request_id_in_metadata_with_token_and_extras() -> None:
    core = CaptionCore(auth_token="s3cret", metadata=[("x-tenant", "t1")])
    given = core.caption(b"x", request_id="req-1").options
    assert given.request_id == "req-1"
    assert given.metadata == (("x-request-id", "req-1"), ("authorization", "Bearer s3cret"), ("x-tenant", "t1"))
    first, second = core.list_models().options, core.list_models().options
    assert first.request_id and first.request_id != second.request_id
    assert ("x-request-id", first.request_id) in first.metadata
    assert CaptionCore().caption(b"x").options.metadata[1:] == ()  # no token, no extras


def test_a_bad_timeout_fails_before_any_call_in_every_shell() -> None:
    with CaptionClient(f"127.0.0.1:{free_port()}") as captions, AnimateClient(f"127.0.0.1:{free_port()}") as videos:
        with pytest.raises(ValueError, match="timeout"):
            captions.caption(b"x", timeout=0)
        with pytest.raises(ValueError, match="timeout"):
            videos.animate(b"x", timeout=-1)  # raised by the call itself, not on the first iteration
        with pytest.raises(ValueError, match="timeout"):
            videos.list_models(timeout=math.inf)


def test_a_failed_blocking_call_carries_its_request_id() -> None:
    with CaptionClient(f"127.0.0.1:{free_port()}", timeout=10) as captions, pytest.raises(ImagewireError) as caught:
        captions.caption(b"x", request_id="req-sync")
    assert (caught.value.code, caught.value.request_id) == (grpc.StatusCode.UNAVAILABLE, "req-sync")


async def test_failed_asyncio_calls_and_streams_carry_their_request_id() -> None:
    target = f"127.0.0.1:{free_port()}"
    async with AsyncCaptionClient(target, timeout=10) as captions:
        with pytest.raises(ImagewireError) as caught:
            await captions.list_models(request_id="req-async")
    assert (caught.value.code, caught.value.request_id) == (grpc.StatusCode.UNAVAILABLE, "req-async")
    async with AsyncAnimateClient(target, timeout=10) as videos:
        with pytest.raises(ImagewireError) as caught:
            async for _ in videos.animate(b"x", request_id="req-stream"):
                pass
        with pytest.raises(ValueError, match="timeout"):
            videos.animate(b"x", timeout=0)
    assert (caught.value.code, caught.value.request_id) == (grpc.StatusCode.UNAVAILABLE, "req-stream")


# --- the video sink -------------------------------------------------------------------------------------------


def result_of(data: bytes) -> AnimateResult:
    return decode_event(animate_pb2.AnimateResponse(result=animate_pb2.AnimateResult(
        total_bytes=len(data), sha256=hashlib.sha256(data).digest())))


def test_the_sink_writes_chunks_in_order_and_verifies_the_result(tmp_path: Path) -> None:
    seen: list[object] = []
    with VideoSink(tmp_path / "v.mp4", on_event=seen.append) as sink:
        assert sink.feed(VideoChunk(b"abc", 0)) is None
        sink.feed(VideoChunk(b"de", 3))
        assert sink.feed(result_of(b"abcde")) == sink.finish() == result_of(b"abcde")
    assert (tmp_path / "v.mp4").read_bytes() == b"abcde" and len(seen) == 3


@pytest.mark.parametrize("case", ["gap", "digest", "no result"])
def test_a_broken_stream_is_data_loss_and_leaves_no_file(tmp_path: Path, case: str) -> None:
    path = tmp_path / "v.mp4"
    with pytest.raises(ImagewireError) as caught, VideoSink(path) as sink:
        sink.feed(VideoChunk(b"abc", 0))
        if case == "gap":
            sink.feed(VideoChunk(b"de", 4))
        elif case == "digest":
            sink.feed(result_of(b"abX"))
        sink.finish()
    assert caught.value.code is grpc.StatusCode.DATA_LOSS and not path.exists()


# --- the CLI --------------------------------------------------------------------------------------------------


def test_format_choices_come_from_the_video_format_enum() -> None:
    assert video_formats() == {"mp4": VideoFormat.MP4_H264, "mp4_h264": VideoFormat.MP4_H264,
                                   "webm": VideoFormat.WEBM_VP9, "webm_vp9": VideoFormat.WEBM_VP9}


def test_animate_flags_are_the_request_parameters_typed_from_their_fields() -> None:
    argv = ["animate", "in.png", "-o", "out.mp4", "--format", "webm"]
    for field in PARAMETERS:
        argv += [f"--{field.name.replace('_', '-')}", "1"]
    args = cli._parser().parse_args(argv)
    for field in PARAMETERS:
        value = getattr(args, field.name)
        kinds = {FieldDescriptor.CPPTYPE_FLOAT: float, FieldDescriptor.CPPTYPE_DOUBLE: float,
                   FieldDescriptor.CPPTYPE_STRING: str}
        expected = kinds.get(field.cpp_type, int)
        assert type(value) is expected and value == expected(1), field.name
    assert args.format == "webm"
    unset = cli._parser().parse_args(["animate", "in.png", "-o", "out.mp4"])
    assert all(getattr(unset, field.name) is None for field in PARAMETERS) and unset.format is None
    assert cli._parser().parse_args(["demo"]).seed == 7
    assert cli._parser().parse_args(["caption", "a.png", "--num-beams", "3"]).num_beams == 3


def test_cli_refuses_a_zero_timeout_instead_of_using_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # a bad command line: argparse's exit status 2
        cli.main(["models", "--target", f"127.0.0.1:{free_port()}", "--timeout", "0"])
    assert exited.value.code == 2
    assert "argument --timeout: must be a positive number of seconds" in capsys.readouterr().err


def test_progress_names_each_stage_once_off_a_terminal() -> None:
    out = io.StringIO()
    display = progress_display(out)  # a StringIO is no terminal
    for event in (Progress(Stage.QUEUED, 1, 0, 0, 0), Progress(Stage.ENCODE_IMAGE, 0, 1, 1, 1),
                  Progress(Stage.DENOISE, 1, 2, 1, 1), Progress(Stage.DENOISE, 2, 2, 1, 1),
                  Progress(Stage.DECODE, 2, 4, 1, 1), Progress(Stage.ENCODE_VIDEO, 2, 4, 1, 1), VideoChunk(b"x", 0),
                  Progress(Stage.DECODE, 4, 4, 1, 1), Progress(Stage.ENCODE_VIDEO, 4, 4, 1, 1), result_of(b"x")):
        display(event)
    assert out.getvalue() == "queued...\nencode image...\ndenoise...\ndecode...\nencode video...\n"


def test_a_stream_counts_what_it_delivered_and_its_failure_says_so() -> None:
    from imagewire.client._core import Received

    call = AnimateCore().animate(b"png", seed=1)
    received = Received()
    for event in (Progress(Stage.QUEUED, 1, 1, 0, 0), VideoChunk(b"abc", 0), VideoChunk(b"de", 3)):
        call.count(received, event)
    assert (received.responses, received.bytes) == (3, 5)
    error = ImagewireError(grpc.StatusCode.UNAVAILABLE, "gone", responses_received=3, bytes_received=5)
    assert str(error) == ("UNAVAILABLE: gone (after 3 responses and 5 video bytes had arrived: a call is not "
                          "retried once it has answered)")
    assert str(ImagewireError(grpc.StatusCode.UNAVAILABLE, "gone")) == "UNAVAILABLE: gone"
    assert CaptionCore().balancing.service == "imagewire.caption.v1.CaptionService"
    assert AnimateCore(max_attempts=1, health_check=False).balancing.service_config() == (
        '{"loadBalancingConfig": [{"round_robin": {}}]}')
