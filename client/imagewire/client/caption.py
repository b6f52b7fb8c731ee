"""Typed clients for imagewire.caption.v1.CaptionService, blocking and asyncio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc
from imagewire.client import _channel
from imagewire.client._channel import ClientBase, TlsConfig
from imagewire.client.errors import ImagewireError

DEFAULT_CAPTION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Caption:
    """A caption and what it cost."""

    text: str
    model_id: str
    input_pixels: int
    price_usd: float
    batch_size: int

    @classmethod
    def from_proto(cls, response: caption_pb2.CaptionResponse) -> Caption:
        return cls(
            text=response.text,
            model_id=response.model_id,
            input_pixels=response.usage.input_pixels,
            price_usd=response.usage.price_usd,
            batch_size=response.batch_size,
        )


def caption_request(
    image: bytes | str | Path,
    *,
    prompt: str = "",
    model_id: str = "",
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
) -> caption_pb2.CaptionRequest:
    """Build a CaptionRequest; image is encoded bytes or a file path. None leaves an option to the server."""
    request = caption_pb2.CaptionRequest(image=_channel.image_bytes(image), prompt=prompt, model_id=model_id)
    if max_new_tokens is not None:
        request.max_new_tokens = max_new_tokens
    if num_beams is not None:
        request.num_beams = num_beams
    return request


class CaptionClient(ClientBase):
    """Blocking client for the caption service.

    ``target`` is any gRPC target string (``host:port``, ``dns:///name:port``, ``ipv4:a:p,b:p``).
    ``timeout`` is the default deadline of each call in seconds; every method also takes its own.
    Failed calls raise :class:`ImagewireError`.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_CAPTION_TIMEOUT_S,
        auth_token: str | None = None,
        tls: TlsConfig | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(timeout=timeout, auth_token=auth_token, metadata=metadata)
        self._channel = _channel.sync_channel(target, tls)
        self._stub = caption_pb2_grpc.CaptionServiceStub(self._channel)

    def caption(
        self,
        image: bytes | str | Path,
        *,
        prompt: str = "",
        model_id: str = "",
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Caption:
        """Caption one image (encoded bytes or a file path)."""
        request = caption_request(
            image, prompt=prompt, model_id=model_id, max_new_tokens=max_new_tokens, num_beams=num_beams
        )
        metadata = self._metadata(request_id)
        try:
            response = self._stub.Caption(request, timeout=timeout or self.timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise ImagewireError.from_rpc_error(error, metadata[0][1]) from None
        return Caption.from_proto(response)

    def list_models(self, *, timeout: float | None = None) -> caption_pb2.ListModelsResponse:
        """The server's loaded models with their limits and defaults."""
        try:
            return self._stub.ListModels(
                caption_pb2.ListModelsRequest(), timeout=timeout or self.timeout, metadata=self._metadata(None)
            )
        except grpc.RpcError as error:
            raise ImagewireError.from_rpc_error(error) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CaptionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncCaptionClient(ClientBase):
    """Asyncio client for the caption service; the same options as :class:`CaptionClient`."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_CAPTION_TIMEOUT_S,
        auth_token: str | None = None,
        tls: TlsConfig | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(timeout=timeout, auth_token=auth_token, metadata=metadata)
        self._channel = _channel.aio_channel(target, tls)
        self._stub = caption_pb2_grpc.CaptionServiceStub(self._channel)

    async def caption(
        self,
        image: bytes | str | Path,
        *,
        prompt: str = "",
        model_id: str = "",
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Caption:
        """Caption one image (encoded bytes or a file path)."""
        request = caption_request(
            image, prompt=prompt, model_id=model_id, max_new_tokens=max_new_tokens, num_beams=num_beams
        )
        metadata = self._metadata(request_id)
        try:
            response = await self._stub.Caption(request, timeout=timeout or self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise ImagewireError.from_rpc_error(error, metadata[0][1]) from None
        return Caption.from_proto(response)

    async def list_models(self, *, timeout: float | None = None) -> caption_pb2.ListModelsResponse:
        """The server's loaded models with their limits and defaults."""
        try:
            return await self._stub.ListModels(
                caption_pb2.ListModelsRequest(), timeout=timeout or self.timeout, metadata=self._metadata(None)
            )
        except grpc.aio.AioRpcError as error:
            raise ImagewireError.from_rpc_error(error) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncCaptionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
