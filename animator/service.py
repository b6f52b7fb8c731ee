"""The AnimateService servicer: protobuf in, engine call, protobuf out. The only animator module using *_pb2."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import grpc.aio
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc

from animator.engine import AnimateEngine
from animator.events import Chunk, Event, Header, JobStatus, Preview, Progress, Result, Stage
from animator.params import AnimateInput
from animator.video import CONTRACT_PREFIX, VideoFormat
from imagewire_serving import errors, tracing
from imagewire_serving.calls import current_call, deadline_of
from imagewire_serving.messages import model_list

SERVICE_NAME = animate_pb2.DESCRIPTOR.services_by_name["AnimateService"].full_name
_REQUEST = animate_pb2.AnimateRequest.DESCRIPTOR
# The request's optional fields (those with presence): absent means "the model's default".
_OPTIONAL = tuple(f.name for f in _REQUEST.fields if f.has_presence and f.message_type is None)


def to_format(value: int) -> VideoFormat | None:
    """The contract's VideoFormat as the engine's (None for unspecified); an unknown value is INVALID_ARGUMENT."""
    if value == animate_pb2.VIDEO_FORMAT_UNSPECIFIED:
        return None
    name = _REQUEST.fields_by_name["format"].enum_type.values_by_number.get(value)  # type: ignore[union-attr] # an enum field
    if name is None or name.name.removeprefix(CONTRACT_PREFIX) not in VideoFormat.__members__:
        raise errors.InvalidArgument(f"unknown video format {value}", field="format")
    return VideoFormat[name.name.removeprefix(CONTRACT_PREFIX)]


def to_input(request: animate_pb2.AnimateRequest) -> AnimateInput:
    """The request in plain values; absent optional fields become None (the model's default)."""
    # HasField's stubs take the literal field names; _OPTIONAL holds names read from the same descriptor.
    optional = {name: getattr(request, name) if request.HasField(name) else None  # type: ignore[arg-type]
                for name in _OPTIONAL}
    violations: tuple[errors.FieldViolation, ...] = ()
    try:
        video_format = to_format(request.format)
    except errors.InvalidArgument as unknown:  # reported with the request's other violations
        video_format, violations = None, unknown.violations
    return AnimateInput(image=request.image, model_id=request.model_id, safety_check=request.safety_check,
                        format=video_format, job_id=request.job_id, violations=violations, **optional)


def to_status(status: JobStatus) -> animate_pb2.JobStatus:
    return animate_pb2.JobStatus(**{**dataclasses.asdict(status), "state": f"JOB_STATE_{status.state.name}"})


# The oneof member and message of each event; AnimateResponse and WatchAnimationResponse share them.
_MEMBERS: dict[type, tuple[str, Any]] = {
    Chunk: ("chunk", animate_pb2.VideoChunk),
    Header: ("header", animate_pb2.VideoHeader),
    Preview: ("preview", animate_pb2.Preview),
    Result: ("result", animate_pb2.AnimateResult),
}


def to_response(event: Event, response_type: Any = animate_pb2.AnimateResponse) -> Any:
    """One engine event as one stream response (an AnimateResponse or a WatchAnimationResponse)."""
    if isinstance(event, Progress):
        stage = animate_pb2.Stage.Value(f"STAGE_{event.stage.name}")
        return response_type(progress=animate_pb2.Progress(stage=stage, step=event.step, total=event.total,
                                                           segment=event.segment, segments=event.segments))
    if isinstance(event, JobStatus):
        return response_type(job=to_status(event))
    member, message = _MEMBERS[type(event)]
    return response_type(**{member: message(**dataclasses.asdict(event))})


# The spans of a generation, told by its progress events: waiting, the model's compute, the video's decode+encode.
_PHASES = {Stage.QUEUED: "animate.queue_wait", Stage.ENCODE_IMAGE: "animate.denoise", Stage.DENOISE: "animate.denoise",
           Stage.DECODE: "animate.video_encode", Stage.ENCODE_VIDEO: "animate.video_encode"}


def _annotate(event: Event) -> None:
    """What the call's log line says of the stream."""
    if isinstance(event, Header):
        current_call().annotate(model=event.model_id, width=event.width, height=event.height,
                                num_frames=event.num_frames, seed=event.seed, container=event.container)
    elif isinstance(event, Result):
        current_call().annotate(video_bytes=event.total_bytes, output_pixels=event.usage.output_pixels,
                                price_usd=event.usage.price_usd, nsfw=event.nsfw)


async def _responses(stream: AsyncGenerator[Event, None], response_type: Any) -> AsyncIterator[Any]:
    # aclosing: when the call ends early, the engine's stream is closed at once (detaching from the job) rather
    # than whenever it is garbage-collected.
    phases = tracing.Phases()
    async with contextlib.aclosing(stream) as events:
        try:
            async for event in events:
                _annotate(event)
                if isinstance(event, Progress):
                    phases.enter(_PHASES.get(event.stage))
                yield to_response(event, response_type)
        finally:
            phases.enter(None)


class AnimateServicer(animate_pb2_grpc.AnimateServiceServicer):
    def __init__(self, engine: Callable[[], AnimateEngine]) -> None:
        # A provider, not the engine itself: it raises Unavailable until the models are loaded.
        self._engine = engine

    async def Animate(  # noqa: N802 - gRPC method name
        self, request: animate_pb2.AnimateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[animate_pb2.AnimateResponse]:
        current_call().annotate(image_bytes=len(request.image))
        stream = self._engine().animate(to_input(request), deadline=deadline_of(context))
        async for response in _responses(stream, animate_pb2.AnimateResponse):
            yield response

    async def WatchAnimation(  # noqa: N802 - gRPC method name
        self, request: animate_pb2.WatchAnimationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[animate_pb2.WatchAnimationResponse]:
        stream = self._engine().watch(request.job_id, request.offset, deadline=deadline_of(context))
        async for response in _responses(stream, animate_pb2.WatchAnimationResponse):
            yield response

    async def CancelAnimation(  # noqa: N802 - gRPC method name
        self, request: animate_pb2.CancelAnimationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> animate_pb2.CancelAnimationResponse:
        status = await self._engine().cancel(request.job_id, deadline=deadline_of(context))
        return animate_pb2.CancelAnimationResponse(job=to_status(status))

    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: animate_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> animate_pb2.ListModelsResponse:
        return model_list(self._engine(), animate_pb2.ListModelsResponse, animate_pb2.ModelInfo)
