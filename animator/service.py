"""The AnimateService servicer: protobuf in, engine call, protobuf out. The only animator module using *_pb2."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

import grpc.aio
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc

from animator.engine import AnimateEngine, AnimateInput, Chunk, Event, Header, Progress, Result, Stage
from imagewire_serving.calls import current_call, deadline_of
from imagewire_serving.device import dtype_name

SERVICE_NAME = animate_pb2.DESCRIPTOR.services_by_name["AnimateService"].full_name

_FORMATS = {
    animate_pb2.VIDEO_FORMAT_UNSPECIFIED: "",
    animate_pb2.VIDEO_FORMAT_MP4_H264: "mp4",
    animate_pb2.VIDEO_FORMAT_WEBM_VP9: "webm",
}
_STAGES = {
    Stage.QUEUED: animate_pb2.STAGE_QUEUED,
    Stage.ENCODE_IMAGE: animate_pb2.STAGE_ENCODE_IMAGE,
    Stage.DENOISE: animate_pb2.STAGE_DENOISE,
    Stage.DECODE: animate_pb2.STAGE_DECODE,
    Stage.ENCODE_VIDEO: animate_pb2.STAGE_ENCODE_VIDEO,
}
_OPTIONAL = ("width", "height", "num_frames", "fps", "motion_bucket_id", "noise_aug_strength", "num_inference_steps",
             "seed", "decode_chunk_size", "min_guidance_scale", "max_guidance_scale")


def to_input(request: animate_pb2.AnimateRequest) -> AnimateInput:
    """The request in plain values; absent optional fields become None (the model's default)."""
    optional = {name: getattr(request, name) if request.HasField(name) else None for name in _OPTIONAL}
    return AnimateInput(
        image=request.image,
        model_id=request.model_id,
        safety_check=request.safety_check,
        # An enum value this server does not know reaches the engine as a name it rejects, naming the field.
        format=_FORMATS.get(request.format, f"enum value {request.format}"),
        **optional,
    )


def to_response(event: Event) -> animate_pb2.AnimateResponse:
    if isinstance(event, Progress):
        return animate_pb2.AnimateResponse(
            progress=animate_pb2.Progress(stage=_STAGES[event.stage], step=event.step, total=event.total))
    if isinstance(event, Chunk):
        return animate_pb2.AnimateResponse(chunk=animate_pb2.VideoChunk(data=event.data, offset=event.offset))
    if isinstance(event, Header):
        return animate_pb2.AnimateResponse(header=animate_pb2.VideoHeader(
            mime_type=event.mime_type, container=event.container, codec=event.codec, width=event.width,
            height=event.height, fps=event.fps, num_frames=event.num_frames, seed=event.seed,
            model_id=event.model_id,
        ))
    usage = event.usage
    return animate_pb2.AnimateResponse(result=animate_pb2.AnimateResult(
        total_bytes=event.total_bytes, sha256=event.sha256, seed=event.seed, safety_checked=event.safety_checked,
        nsfw=event.nsfw,
        usage=animate_pb2.Usage(output_pixels=usage.output_pixels, usd_per_output_pixel=usage.usd_per_output_pixel,
                                price_usd=usage.price_usd),
    ))


class AnimateServicer(animate_pb2_grpc.AnimateServiceServicer):
    def __init__(self, engine: Callable[[], AnimateEngine]) -> None:
        # A provider, not the engine itself: it raises Unavailable until the models are loaded.
        self._engine = engine

    async def Animate(  # noqa: N802 - gRPC method name
        self, request: animate_pb2.AnimateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[animate_pb2.AnimateResponse]:
        record = current_call()
        started = time.perf_counter()
        record.annotate(image_bytes=len(request.image))
        # aclosing: when the call ends early, the engine's generator is closed at once (stopping the generation)
        # rather than whenever it is garbage-collected.
        stream = self._engine().animate(to_input(request), deadline=deadline_of(context))
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if isinstance(event, Header):
                    record.annotate(model=event.model_id, width=event.width, height=event.height,
                                    num_frames=event.num_frames, seed=event.seed, container=event.container)
                elif isinstance(event, Chunk) and event.offset == 0:
                    record.annotate(first_byte_ms=round((time.perf_counter() - started) * 1000, 3))
                elif isinstance(event, Result):
                    record.annotate(video_bytes=event.total_bytes, output_pixels=event.usage.output_pixels,
                                    price_usd=event.usage.price_usd, nsfw=event.nsfw)
                yield to_response(event)

    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: animate_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> animate_pb2.ListModelsResponse:
        engine = self._engine()
        limits = engine.limits
        return animate_pb2.ListModelsResponse(
            default_model_id=engine.default_model_id,
            models=[
                animate_pb2.ModelInfo(
                    model_id=backend.model_id,
                    device=str(backend.device),
                    dtype=dtype_name(backend.dtype),
                    max_image_bytes=limits.image.max_bytes,
                    default_width=backend.defaults.width,
                    default_height=backend.defaults.height,
                    default_num_frames=backend.defaults.num_frames,
                    default_fps=backend.defaults.fps,
                    default_num_inference_steps=backend.defaults.num_inference_steps,
                    max_pixels_per_frame=limits.max_pixels_per_frame,
                    max_num_frames=limits.max_num_frames,
                    max_num_inference_steps=limits.max_num_inference_steps,
                    safety_checker=engine.safety_checker is not None,
                    usd_per_output_pixel=limits.usd_per_output_pixel,
                )
                for backend in engine.backends
            ],
        )
