"""The CaptionService servicer: protobuf in, engine call, protobuf out. The only captioner module using *_pb2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc.aio
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc

from captioner.engine import CaptionEngine, CaptionInput
from imagewire_serving.calls import current_call, deadline_of
from imagewire_serving.messages import model_list

SERVICE_NAME = caption_pb2.DESCRIPTOR.services_by_name["CaptionService"].full_name


def to_input(request: caption_pb2.CaptionRequest) -> CaptionInput:
    """The request in plain values; absent optional fields become None (the engine's defaults)."""
    return CaptionInput(
        image=request.image,
        model_id=request.model_id,
        prompt=request.prompt,
        max_new_tokens=request.max_new_tokens if request.HasField("max_new_tokens") else None,
        num_beams=request.num_beams if request.HasField("num_beams") else None,
    )


class CaptionServicer(caption_pb2_grpc.CaptionServiceServicer):
    def __init__(self, engine: Callable[[], CaptionEngine]) -> None:
        # A provider, not the engine itself: it raises Unavailable until the models are loaded.
        self._engine = engine

    async def Caption(  # noqa: N802 - gRPC method name
        self, request: caption_pb2.CaptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> caption_pb2.CaptionResponse:
        result = await self._engine().caption(to_input(request), deadline=deadline_of(context))
        current_call().annotate(
            model=result.model_id, image_bytes=len(request.image), input_pixels=result.input_pixels,
            batch_size=result.batch_size, queue_ms=round(result.queue_s * 1000, 3),
            compute_ms=round(result.compute_s * 1000, 3),
        )
        usage = caption_pb2.Usage(input_pixels=result.input_pixels, usd_per_input_pixel=result.usd_per_input_pixel,
                                  price_usd=result.price_usd)
        return caption_pb2.CaptionResponse(text=result.text, model_id=result.model_id, batch_size=result.batch_size,
                                           usage=usage, provenance_key=result.provenance_key)

    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: caption_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> caption_pb2.ListModelsResponse:
        return model_list(self._engine(), caption_pb2.ListModelsResponse, caption_pb2.ModelInfo)
