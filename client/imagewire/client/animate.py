"""imagewire.animate.v1.AnimateService: request building, response decoding and the I/O-free core
(:mod:`imagewire.client.animate_clients` holds the blocking and asyncio clients on top).

Every generation is a job with an id. ``animate`` starts one (the client picks its id unless given ``job_id``)
and yields the stream's events as they arrive (see :mod:`imagewire.client.animate_types`); ``watch`` follows an
existing job from a byte offset; ``cancel`` stops one. ``animate_to_file`` and ``watch_to_file`` write the video
to a file while it streams, resume by themselves after a dropped connection (:class:`Resume`), and check the
file's length and SHA-256 at the end. Leaving ``animate`` (breaking out of it, closing it, Ctrl-C) or
interrupting ``animate_to_file`` cancels the job, which stops the server's generation at its next step; leaving a
``watch`` only stops watching.

Every call about a job carries its id in the ``x-imagewire-job-id`` metadata key, on which a front door with
several replicas routes it to the replica holding the job.
"""

from __future__ import annotations

import uuid
from typing import Any, Unpack

import grpc

from imagewire._protodata import from_message
from imagewire.animate.v1 import animate_pb2, animate_types
from imagewire.client._core import CallArgs, ImageInput, Metadata, PreparedCall, ServiceCore, image_bytes
from imagewire.client._messages import build_message, optional_fields
from imagewire.client._resume import Attempt, Download, Resume
from imagewire.client.animate_types import AnimateEvent, AnimateModelList, JobStatus, VideoChunk
from imagewire.client.errors import FieldViolation, ImagewireError
from imagewire.client.video_sink import VideoSink

# Generation takes minutes on a real model; the caller may shorten or lengthen it per call.
DEFAULT_ANIMATE_TIMEOUT_S = 900.0
#: The metadata key carrying the job id, on which a front door routes a job's calls to the replica holding it.
JOB_ID_KEY = "x-imagewire-job-id"

#: The request's generation parameters: the optional fields, each absent unless given (then the model's default).
PARAMETERS = optional_fields(animate_pb2.AnimateRequest.DESCRIPTOR)

#: The AnimateRequest fields besides the image, as keyword arguments; None (or absent) leaves one to the server.
AnimateFields = animate_types.AnimateRequestFields


class AnimateArgs(CallArgs, AnimateFields, total=False):
    """What ``animate`` and ``animate_to_file`` take besides the image: the request's fields and the call's
    options."""


def new_job_id() -> str:
    """A fresh job id (32 hexadecimal digits)."""
    return uuid.uuid4().hex


def animate_request(image: ImageInput, **fields: Unpack[AnimateFields]) -> animate_pb2.AnimateRequest:
    """Build an AnimateRequest; image is encoded bytes or a file path, ``fields`` any other request fields.

    None leaves a field to the server (for the optional :data:`PARAMETERS`, the model's default); an unknown
    name raises TypeError.
    """
    return build_message(animate_pb2.AnimateRequest, image=image_bytes(image), **fields)


def decode_event(response: Any) -> AnimateEvent:
    """The event inside one AnimateResponse's or WatchAnimationResponse's oneof, as its dataclass."""
    kind = response.WhichOneof("event")
    if kind is None:  # empty, or an event type newer than this client
        raise ImagewireError(grpc.StatusCode.INTERNAL, "server sent a response without a known event")
    # from_message gives the class registered for the message; every event member's is an AnimateEvent.
    return from_message(getattr(response, kind))  # type: ignore[return-value]


def _with_job_id(fields: AnimateFields) -> AnimateFields:
    """The fields with a job id: the caller's, else a new one."""
    return {**fields, "job_id": fields.get("job_id") or new_job_id()}


def _required(job_id: str) -> str:
    """``job_id``, which a call about an existing job must name (build_message checks its characters)."""
    if job_id == "":
        raise ImagewireError.invalid_argument((FieldViolation("job_id", "job_id is required"),))
    return job_id


def _job_metadata(job_id: str) -> Metadata:
    return ((JOB_ID_KEY, job_id),)


def video_bytes(event: AnimateEvent) -> int:
    """The video bytes an event carries."""
    return len(event.data) if isinstance(event, VideoChunk) else 0


class AnimateCore(ServiceCore):
    """The animate client's I/O-free half: builds each call and decodes its responses."""

    DEFAULT_TIMEOUT = DEFAULT_ANIMATE_TIMEOUT_S
    SERVICE = animate_pb2.DESCRIPTOR.services_by_name["AnimateService"].full_name

    def animate(
        self, image: ImageInput, *, timeout: float | None = None, request_id: str | None = None,
        **fields: Unpack[AnimateFields],
    ) -> PreparedCall[AnimateEvent]:
        """An Animate call: a stream whose each response decodes to one event. Without a ``job_id`` the call gets
        a new one, so that it can be watched, resumed and cancelled even if its first event never arrives."""
        request = animate_request(image, **_with_job_id(fields))
        return self.prepare(request, decode_event, timeout, request_id, metadata=_job_metadata(request.job_id),
                            payload=video_bytes)

    def watch(
        self, job_id: str, *, offset: int = 0, timeout: float | None = None, request_id: str | None = None
    ) -> PreparedCall[AnimateEvent]:
        """A WatchAnimation call: job ``job_id``'s events, its video from byte ``offset``."""
        request = build_message(animate_pb2.WatchAnimationRequest, job_id=_required(job_id), offset=offset)
        return self.prepare(request, decode_event, timeout, request_id, metadata=_job_metadata(job_id),
                            payload=video_bytes)

    def cancel(
        self, job_id: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> PreparedCall[JobStatus]:
        """A CancelAnimation call (a control call); it answers once the job has stopped."""
        request = build_message(animate_pb2.CancelAnimationRequest, job_id=_required(job_id))
        return self.prepare(request, lambda reply: JobStatus.from_proto(reply.job), timeout, request_id,
                            control=True, metadata=_job_metadata(job_id))

    def list_models(
        self, *, timeout: float | None = None, request_id: str | None = None
    ) -> PreparedCall[AnimateModelList]:
        """A ListModels call (a control call: its default deadline is the client's ``control_timeout``)."""
        request = animate_pb2.ListModelsRequest()
        return self.prepare(request, AnimateModelList.from_proto, timeout, request_id, control=True)

    def animate_download(self, image: ImageInput, sink: VideoSink, resume: Resume, *, timeout: float | None = None,
                         request_id: str | None = None, **fields: Unpack[AnimateFields]) -> Download:
        """The calls of a video generated into ``sink``: Animate, then WatchAnimation after a drop (or Animate
        again with the same job id if the server lost the job), all under one request id and deadline."""
        image, request_id = image_bytes(image), request_id or uuid.uuid4().hex
        fields = _with_job_id(fields)
        job_id = str(fields["job_id"])
        first = self.animate(image, timeout=timeout, request_id=request_id, **fields)
        return Download(
            Attempt("Animate", first), sink, resume,
            watch=lambda offset, left: self.watch(job_id, offset=offset, timeout=left, request_id=request_id),
            restart=lambda left: self.animate(image, timeout=left, request_id=request_id, **fields),
        )

    def watch_download(self, job_id: str, sink: VideoSink, resume: Resume, *, timeout: float | None = None,
                       request_id: str | None = None) -> Download:
        """The calls of a job's video watched into ``sink`` from the bytes it already has."""
        request_id = request_id or uuid.uuid4().hex
        first = self.watch(job_id, offset=sink.written, timeout=timeout, request_id=request_id)
        return Download(
            Attempt("WatchAnimation", first), sink, resume,
            watch=lambda offset, left: self.watch(job_id, offset=offset, timeout=left, request_id=request_id),
        )
