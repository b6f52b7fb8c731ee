"""Typed clients for imagewire.animate.v1.AnimateService, blocking and asyncio.

``animate`` yields the stream's events as they arrive: :class:`Progress`, :class:`VideoHeader`,
:class:`VideoChunk` and finally :class:`AnimateResult` (the generated message types).
``animate_to_file`` writes the video to a file while it streams and checks its length and SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import grpc
import grpc.aio

from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.client import _channel
from imagewire.client._channel import ClientBase, TlsConfig
from imagewire.client.errors import ImagewireError

# Generation takes minutes on a real model; the caller may shorten or lengthen it per call.
DEFAULT_ANIMATE_TIMEOUT_S = 900.0

Progress = animate_pb2.Progress
VideoHeader = animate_pb2.VideoHeader
VideoChunk = animate_pb2.VideoChunk
AnimateResult = animate_pb2.AnimateResult
VideoFormat = animate_pb2.VideoFormat
Stage = animate_pb2.Stage
AnimateEvent = Progress | VideoHeader | VideoChunk | AnimateResult

_OPTIONAL_FIELDS = (
    "width",
    "height",
    "num_frames",
    "fps",
    "motion_bucket_id",
    "noise_aug_strength",
    "num_inference_steps",
    "seed",
    "decode_chunk_size",
    "min_guidance_scale",
    "max_guidance_scale",
)


def animate_request(
    image: bytes | str | Path,
    *,
    model_id: str = "",
    safety_check: bool = False,
    format: int = animate_pb2.VIDEO_FORMAT_UNSPECIFIED,  # noqa: A002 - mirrors the proto field
    **params: int | float | None,
) -> animate_pb2.AnimateRequest:
    """Build an AnimateRequest. ``params`` are the optional numeric fields (width, height, num_frames, fps,
    motion_bucket_id, noise_aug_strength, num_inference_steps, seed, decode_chunk_size, min_guidance_scale,
    max_guidance_scale); None leaves a field to the server's default."""
    unknown = set(params) - set(_OPTIONAL_FIELDS)
    if unknown:
        raise TypeError(f"unknown animate parameter(s): {', '.join(sorted(unknown))}")
    request = animate_pb2.AnimateRequest(
        image=_channel.image_bytes(image), model_id=model_id, safety_check=safety_check, format=format
    )
    for name, value in params.items():
        if value is not None:
            setattr(request, name, value)
    return request


def event_of(response: animate_pb2.AnimateResponse) -> AnimateEvent:
    """The message inside one stream response's oneof."""
    kind = response.WhichOneof("event")
    if kind is None:
        raise ImagewireError(grpc.StatusCode.INTERNAL, "server sent an empty AnimateResponse")
    return getattr(response, kind)


class VideoSink:
    """Writes a stream's chunks to a file in order and verifies the result's length and digest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("wb")
        self._digest = hashlib.sha256()
        self._written = 0
        self.header: VideoHeader | None = None

    def feed(self, event: AnimateEvent) -> AnimateResult | None:
        """Consume one event; returns the result once the stream's final event arrives."""
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
            return event
        return None

    def abort(self) -> None:
        """Close and remove a partial file."""
        self._file.close()
        self.path.unlink(missing_ok=True)


class AnimateClient(ClientBase):
    """Blocking client for the animate service; see :class:`imagewire.client.CaptionClient` for the options.

    Breaking out of the ``animate`` iterator (or closing it) cancels the call, which stops the server's
    generation at its next denoising step.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_ANIMATE_TIMEOUT_S,
        auth_token: str | None = None,
        tls: TlsConfig | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(timeout=timeout, auth_token=auth_token, metadata=metadata)
        self._channel = _channel.sync_channel(target, tls)
        self._stub = animate_pb2_grpc.AnimateServiceStub(self._channel)

    def animate(
        self,
        image: bytes | str | Path,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        **params: int | float | bool | str | None,
    ) -> Iterator[AnimateEvent]:
        """Generate a video from one image, yielding the stream's events as they arrive."""
        request = animate_request(image, **params)  # type: ignore[arg-type]
        metadata = self._metadata(request_id)
        call = self._stub.Animate(request, timeout=timeout or self.timeout, metadata=metadata)
        try:
            for response in call:
                yield event_of(response)
        except grpc.RpcError as error:
            raise ImagewireError.from_rpc_error(error, metadata[0][1]) from None
        finally:
            call.cancel()  # no-op after a complete stream; stops the server's work if the caller left early

    def animate_to_file(
        self,
        image: bytes | str | Path,
        path: str | Path,
        *,
        on_event: Callable[[AnimateEvent], None] | None = None,
        timeout: float | None = None,
        **params: int | float | bool | str | None,
    ) -> AnimateResult:
        """Generate a video into ``path`` while it streams; returns the verified final result."""
        sink = VideoSink(path)
        result: AnimateResult | None = None
        try:
            # Read to the end of the stream, not just to the result: leaving early would cancel the call.
            for event in self.animate(image, timeout=timeout, **params):
                if on_event is not None:
                    on_event(event)
                result = sink.feed(event) or result
        except BaseException:
            sink.abort()
            raise
        if result is None:
            sink.abort()
            raise ImagewireError(grpc.StatusCode.DATA_LOSS, "stream ended without a result")
        return result

    def list_models(self, *, timeout: float | None = None) -> animate_pb2.ListModelsResponse:
        """The server's loaded models with their limits and defaults."""
        try:
            return self._stub.ListModels(
                animate_pb2.ListModelsRequest(), timeout=timeout or 30.0, metadata=self._metadata(None)
            )
        except grpc.RpcError as error:
            raise ImagewireError.from_rpc_error(error) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AnimateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAnimateClient(ClientBase):
    """Asyncio client for the animate service; the same options as :class:`AnimateClient`."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_ANIMATE_TIMEOUT_S,
        auth_token: str | None = None,
        tls: TlsConfig | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(timeout=timeout, auth_token=auth_token, metadata=metadata)
        self._channel = _channel.aio_channel(target, tls)
        self._stub = animate_pb2_grpc.AnimateServiceStub(self._channel)

    async def animate(
        self,
        image: bytes | str | Path,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        **params: int | float | bool | str | None,
    ) -> AsyncIterator[AnimateEvent]:
        """Generate a video from one image, yielding the stream's events as they arrive."""
        request = animate_request(image, **params)  # type: ignore[arg-type]
        metadata = self._metadata(request_id)
        call = self._stub.Animate(request, timeout=timeout or self.timeout, metadata=metadata)
        try:
            async for response in call:
                yield event_of(response)
        except grpc.aio.AioRpcError as error:
            raise ImagewireError.from_rpc_error(error, metadata[0][1]) from None
        finally:
            call.cancel()

    async def animate_to_file(
        self,
        image: bytes | str | Path,
        path: str | Path,
        *,
        on_event: Callable[[AnimateEvent], None] | None = None,
        timeout: float | None = None,
        **params: int | float | bool | str | None,
    ) -> AnimateResult:
        """Generate a video into ``path`` while it streams; returns the verified final result."""
        sink = VideoSink(path)
        result: AnimateResult | None = None
        try:
            async for event in self.animate(image, timeout=timeout, **params):
                if on_event is not None:
                    on_event(event)
                result = sink.feed(event) or result
        except BaseException:
            sink.abort()
            raise
        if result is None:
            sink.abort()
            raise ImagewireError(grpc.StatusCode.DATA_LOSS, "stream ended without a result")
        return result

    async def list_models(self, *, timeout: float | None = None) -> animate_pb2.ListModelsResponse:
        """The server's loaded models with their limits and defaults."""
        try:
            return await self._stub.ListModels(
                animate_pb2.ListModelsRequest(), timeout=timeout or 30.0, metadata=self._metadata(None)
            )
        except grpc.aio.AioRpcError as error:
            raise ImagewireError.from_rpc_error(error) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncAnimateClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
