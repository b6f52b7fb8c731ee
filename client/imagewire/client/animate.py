"""imagewire.animate.v1.AnimateService: the I/O-free core, the blocking and asyncio clients, the video sink.

``animate`` yields the stream's events as they arrive (see :mod:`imagewire.client.animate_types`);
``animate_to_file`` writes the video to a file while it streams and checks its length and SHA-256.
Breaking out of the ``animate`` iterator (or closing it) cancels the call, which stops the server's
generation at its next denoising step.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Self, Unpack

import grpc

from imagewire._protodata import from_message
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.client._core import CallArgs, ImageInput, PreparedCall, ServiceCore, image_bytes
from imagewire.client._messages import build_message, optional_fields
from imagewire.client._shell import AsyncShell, BlockingShell
from imagewire.client.animate_types import AnimateEvent, AnimateModelList, AnimateResult, VideoChunk, VideoHeader
from imagewire.client.errors import ImagewireError

# Generation takes minutes on a real model; the caller may shorten or lengthen it per call.
DEFAULT_ANIMATE_TIMEOUT_S = 900.0

#: The request's generation parameters: the optional fields, each absent unless given (then the model's default).
PARAMETERS = optional_fields(animate_pb2.AnimateRequest.DESCRIPTOR)

#: A value of an AnimateRequest field, or of the per-call ``timeout`` / ``request_id``.
FieldValue = int | float | bool | str | None


def animate_request(image: ImageInput, **fields: FieldValue) -> animate_pb2.AnimateRequest:
    """Build an AnimateRequest; image is encoded bytes or a file path, ``fields`` any other request fields.

    None leaves a field to the server (for the optional :data:`PARAMETERS`, the model's default); an unknown
    name raises TypeError.
    """
    return build_message(animate_pb2.AnimateRequest, image=image_bytes(image), **fields)


def decode_event(response: animate_pb2.AnimateResponse) -> AnimateEvent:
    """The event inside one stream response's oneof, as its dataclass."""
    kind = response.WhichOneof("event")
    if kind is None:  # empty, or an event type newer than this client
        raise ImagewireError(grpc.StatusCode.INTERNAL, "server sent an AnimateResponse without a known event")
    return from_message(getattr(response, kind))  # type: ignore[return-value]


def video_bytes(event: AnimateEvent) -> int:
    """The video bytes an event carries."""
    return len(event.data) if isinstance(event, VideoChunk) else 0


class AnimateCore(ServiceCore):
    """The animate client's I/O-free half: builds each call and decodes its responses."""

    DEFAULT_TIMEOUT = DEFAULT_ANIMATE_TIMEOUT_S
    SERVICE = animate_pb2.DESCRIPTOR.services_by_name["AnimateService"].full_name

    def animate(
        self, image: ImageInput, *, timeout: float | None = None, request_id: str | None = None, **fields: FieldValue
    ) -> PreparedCall[AnimateEvent]:
        """An Animate call: a stream whose each response decodes to one event."""
        return self.prepare(animate_request(image, **fields), decode_event, timeout, request_id, payload=video_bytes)

    def list_models(
        self, *, timeout: float | None = None, request_id: str | None = None
    ) -> PreparedCall[AnimateModelList]:
        """A ListModels call (a control call: its default deadline is the client's ``control_timeout``)."""
        request = animate_pb2.ListModelsRequest()
        return self.prepare(request, AnimateModelList.from_proto, timeout, request_id, control=True)


class VideoSink:
    """Writes a stream's chunks to a file in order and verifies the result's length and digest.

    ``on_event`` sees every event first. Used as a context manager, it removes the partial file when the
    block fails.
    """

    def __init__(self, path: str | Path, on_event: Callable[[AnimateEvent], None] | None = None) -> None:
        self.path = Path(path)
        self._on_event = on_event
        self._file = self.path.open("wb")
        self._digest = hashlib.sha256()
        self._written = 0
        self.header: VideoHeader | None = None
        self.result: AnimateResult | None = None

    def feed(self, event: AnimateEvent) -> AnimateResult | None:
        """Consume one event; returns the result once the stream's final event arrives."""
        if self._on_event is not None:
            self._on_event(event)
        if isinstance(event, VideoHeader):
            self.header = event
        elif isinstance(event, VideoChunk):
            if event.offset != self._written:
                raise ImagewireError(
                    grpc.StatusCode.DATA_LOSS, f"chunk at offset {event.offset}, expected {self._written}"
                )
            self._file.write(event.data)
            self._digest.update(event.data)
            self._written += len(event.data)
        elif isinstance(event, AnimateResult):
            self._file.close()
            if event.total_bytes != self._written or event.sha256 != self._digest.digest():
                raise ImagewireError(
                    grpc.StatusCode.DATA_LOSS,
                    f"received {self._written} bytes that do not match the result "
                    f"({event.total_bytes} bytes, sha256 {event.sha256.hex()})",
                )
            self.result = event
        return self.result

    def finish(self) -> AnimateResult:
        """The verified result, once the stream has ended."""
        if self.result is None:
            raise ImagewireError(grpc.StatusCode.DATA_LOSS, "stream ended without a result")
        return self.result

    def abort(self) -> None:
        """Close and remove a partial file."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.abort()


class AnimateClient(BlockingShell[AnimateCore]):
    """Blocking client for the animate service: default deadline 900 s per stream, 30 s for ListModels.

    See :class:`imagewire.client.BlockingShell` for the options.
    """

    _core_type = AnimateCore
    _stub_type = animate_pb2_grpc.AnimateServiceStub

    def animate(self, image: ImageInput, **args: FieldValue) -> Iterator[AnimateEvent]:
        """Generate a video from one image, yielding the stream's events as they arrive.

        ``args``: AnimateRequest fields (``model_id``, ``format``, any of :data:`PARAMETERS`...) and the
        call's ``timeout`` and ``request_id``. They are checked here, before the call starts.
        """
        return self._stream(self._stub.Animate, self._core.animate(image, **args))  # type: ignore[arg-type]

    def animate_to_file(
        self, image: ImageInput, path: str | Path, *, on_event: Callable[[AnimateEvent], None] | None = None,
        **args: FieldValue,
    ) -> AnimateResult:
        """Generate a video into ``path`` while it streams; returns the verified final result."""
        events = self.animate(image, **args)
        with VideoSink(path, on_event) as sink:
            # Read to the end of the stream, not just to the result: leaving early would cancel the call.
            for event in events:
                sink.feed(event)
            return sink.finish()

    def list_models(self, **args: Unpack[CallArgs]) -> AnimateModelList:
        """The server's loaded models with their limits and defaults."""
        return self._unary(self._stub.ListModels, self._core.list_models(**args))


class AsyncAnimateClient(AsyncShell[AnimateCore]):
    """Asyncio client for the animate service; the same options and methods as :class:`AnimateClient`."""

    _core_type = AnimateCore
    _stub_type = animate_pb2_grpc.AnimateServiceStub

    def animate(self, image: ImageInput, **args: FieldValue) -> AsyncIterator[AnimateEvent]:
        """Generate a video from one image, yielding the stream's events as they arrive."""
        return self._stream(self._stub.Animate, self._core.animate(image, **args))  # type: ignore[arg-type]

    async def animate_to_file(
        self, image: ImageInput, path: str | Path, *, on_event: Callable[[AnimateEvent], None] | None = None,
        **args: FieldValue,
    ) -> AnimateResult:
        """Generate a video into ``path`` while it streams; returns the verified final result."""
        events = self.animate(image, **args)
        with VideoSink(path, on_event) as sink:
            async for event in events:
                sink.feed(event)
            return sink.finish()

    async def list_models(self, **args: Unpack[CallArgs]) -> AnimateModelList:
        """The server's loaded models with their limits and defaults."""
        return await self._unary(self._stub.ListModels, self._core.list_models(**args))
