"""imagewire.caption.v1.CaptionService: the result types, the I/O-free core, the blocking and asyncio clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, Unpack

from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc
from imagewire.client._core import CallArgs, ImageInput, PreparedCall, ServiceCore, image_bytes
from imagewire.client._messages import ProtoData, build_message
from imagewire.client._shell import AsyncShell, BlockingShell

DEFAULT_CAPTION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CaptionUsage(ProtoData):
    """What a caption consumed (decoded input pixels) and what it costs, in US dollars."""

    PROTO = caption_pb2.Usage

    input_pixels: int
    usd_per_input_pixel: float
    price_usd: float


@dataclass(frozen=True)
class Caption(ProtoData):
    """A caption, the model that wrote it, what it cost, and the size of the batch it ran in."""

    PROTO = caption_pb2.CaptionResponse

    text: str
    model_id: str
    usage: CaptionUsage
    batch_size: int


@dataclass(frozen=True)
class CaptionModelInfo(ProtoData):
    """One loaded caption model with its limits and defaults."""

    PROTO = caption_pb2.ModelInfo

    model_id: str
    device: str
    dtype: str
    max_image_bytes: int
    max_image_pixels: int
    default_max_new_tokens: int
    max_new_tokens_limit: int
    default_num_beams: int
    num_beams_limit: int
    max_batch_size: int
    usd_per_input_pixel: float


@dataclass(frozen=True)
class CaptionModelList(ProtoData):
    """The caption server's loaded models, the default first."""

    PROTO = caption_pb2.ListModelsResponse

    models: tuple[CaptionModelInfo, ...]
    default_model_id: str


class CaptionFields(TypedDict, total=False):
    """The CaptionRequest fields besides the image; None (or absent) leaves one to the server."""

    prompt: str
    model_id: str
    max_new_tokens: int | None
    num_beams: int | None


class CaptionArgs(CallArgs, CaptionFields, total=False):
    """What ``caption`` takes besides the image: the request's fields and the call's options."""


def caption_request(image: ImageInput, **fields: Unpack[CaptionFields]) -> caption_pb2.CaptionRequest:
    """Build a CaptionRequest; image is encoded bytes or a file path."""
    return build_message(caption_pb2.CaptionRequest, image=image_bytes(image), **fields)


class CaptionCore(ServiceCore):
    """The caption client's I/O-free half: builds each call and decodes its responses."""

    DEFAULT_TIMEOUT = DEFAULT_CAPTION_TIMEOUT_S

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
