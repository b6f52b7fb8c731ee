"""imagewire.caption.v1.CaptionService: the result types, the I/O-free core, the blocking and asyncio clients."""

from __future__ import annotations

from typing import Unpack

from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc, caption_types
from imagewire.client._core import CallArgs, ImageInput, PreparedCall, ServiceCore, image_bytes
from imagewire.client._messages import build_message
from imagewire.client._shell import AsyncShell, BlockingShell

DEFAULT_CAPTION_TIMEOUT_S = 30.0


# The results, generated from the protos (imagewire/caption/v1/caption_types.py), under the client's names.
Caption = caption_types.CaptionResponse
CaptionUsage = caption_types.Usage
CaptionModelInfo = caption_types.ModelInfo
CaptionFieldInfo = caption_types.FieldInfo
CaptionModelList = caption_types.ListModelsResponse


#: The CaptionRequest fields besides the image, as keyword arguments; None (or absent) leaves one to the server.
CaptionFields = caption_types.CaptionRequestFields


class CaptionArgs(CallArgs, CaptionFields, total=False):
    """What ``caption`` takes besides the image: the request's fields and the call's options."""


def caption_request(image: ImageInput, **fields: Unpack[CaptionFields]) -> caption_pb2.CaptionRequest:
    """Build a CaptionRequest; image is encoded bytes or a file path."""
    return build_message(caption_pb2.CaptionRequest, image=image_bytes(image), **fields)


class CaptionCore(ServiceCore):
    """The caption client's I/O-free half: builds each call and decodes its responses."""

    DEFAULT_TIMEOUT = DEFAULT_CAPTION_TIMEOUT_S
    SERVICE = caption_pb2.DESCRIPTOR.services_by_name["CaptionService"].full_name

    def caption(
        self,
        image: ImageInput,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        **fields: Unpack[CaptionFields],
    ) -> PreparedCall[Caption]:
        """A Caption call of one image."""
        return self.prepare(caption_request(image, **fields), Caption.from_proto, timeout, request_id)

    def list_models(
        self, *, timeout: float | None = None, request_id: str | None = None
    ) -> PreparedCall[CaptionModelList]:
        """A ListModels call (a control call: its default deadline is the client's ``control_timeout``)."""
        request = caption_pb2.ListModelsRequest()
        return self.prepare(request, CaptionModelList.from_proto, timeout, request_id, control=True)


class CaptionClient(BlockingShell[CaptionCore]):
    """Blocking client for the caption service (default deadline 30 s); see :class:`BlockingShell` for options."""

    _core_type = CaptionCore
    _stub_type = caption_pb2_grpc.CaptionServiceStub

    def caption(self, image: ImageInput, **args: Unpack[CaptionArgs]) -> Caption:
        """Caption one image (encoded bytes or a file path)."""
        return self._unary(self._stub.Caption, self._core.caption(image, **args))

    def list_models(self, **args: Unpack[CallArgs]) -> CaptionModelList:
        """The server's loaded models with their limits and defaults."""
        return self._unary(self._stub.ListModels, self._core.list_models(**args))


class AsyncCaptionClient(AsyncShell[CaptionCore]):
    """Asyncio client for the caption service; the same options as :class:`CaptionClient`."""

    _core_type = CaptionCore
    _stub_type = caption_pb2_grpc.CaptionServiceStub

    async def caption(self, image: ImageInput, **args: Unpack[CaptionArgs]) -> Caption:
        """Caption one image (encoded bytes or a file path)."""
        return await self._unary(self._stub.Caption, self._core.caption(image, **args))

    async def list_models(self, **args: Unpack[CallArgs]) -> CaptionModelList:
        """The server's loaded models with their limits and defaults."""
        return await self._unary(self._stub.ListModels, self._core.list_models(**args))
