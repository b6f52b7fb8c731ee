"""What the animate service returns, as frozen dataclasses and enums mirroring imagewire.animate.v1.

The Animate stream yields :class:`Progress` (repeatedly), one :class:`VideoHeader`, the :class:`VideoChunk`\\ s
in order, and last one :class:`AnimateResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewire.animate.v1 import animate_pb2
from imagewire.client._messages import ProtoData, ProtoEnum


class Stage(ProtoEnum):
    """A phase of a generation (``imagewire.animate.v1.Stage`` without its ``STAGE_`` prefix)."""

    UNSPECIFIED = animate_pb2.STAGE_UNSPECIFIED
    QUEUED = animate_pb2.STAGE_QUEUED
    ENCODE_IMAGE = animate_pb2.STAGE_ENCODE_IMAGE
    DENOISE = animate_pb2.STAGE_DENOISE
    DECODE = animate_pb2.STAGE_DECODE
    ENCODE_VIDEO = animate_pb2.STAGE_ENCODE_VIDEO


class VideoFormat(ProtoEnum):
    """The container and codec of the video (``imagewire.animate.v1.VideoFormat`` without its prefix)."""

    UNSPECIFIED = animate_pb2.VIDEO_FORMAT_UNSPECIFIED
    MP4_H264 = animate_pb2.VIDEO_FORMAT_MP4_H264
    WEBM_VP9 = animate_pb2.VIDEO_FORMAT_WEBM_VP9


@dataclass(frozen=True)
class Progress(ProtoData):
    """How far a generation has come: ``step`` of ``total`` units of ``stage`` (``total`` 0: unknown)."""

    PROTO = animate_pb2.Progress

    stage: Stage
    step: int
    total: int


@dataclass(frozen=True)
class VideoHeader(ProtoData):
    """The video whose bytes follow; sent once, before the first chunk."""

    PROTO = animate_pb2.VideoHeader

    mime_type: str
    container: str
    codec: str
    width: int
    height: int
    fps: int
    num_frames: int
    seed: int
    model_id: str


@dataclass(frozen=True)
class VideoChunk(ProtoData):
    """The next bytes of the video, starting at byte ``offset`` of the file."""

    PROTO = animate_pb2.VideoChunk

    data: bytes
    offset: int


@dataclass(frozen=True)
class AnimateUsage(ProtoData):
    """What a video consumed (output pixels: width x height x frames) and what it costs, in US dollars."""

    PROTO = animate_pb2.Usage

    output_pixels: int
    usd_per_output_pixel: float
    price_usd: float


@dataclass(frozen=True)
class AnimateResult(ProtoData):
    """The summary of a finished generation; the stream's last event."""

    PROTO = animate_pb2.AnimateResult

    total_bytes: int
    sha256: bytes
    seed: int
    safety_checked: bool
    nsfw: bool
    usage: AnimateUsage


@dataclass(frozen=True)
class AnimateModelInfo(ProtoData):
    """One loaded video model with its limits and defaults."""

    PROTO = animate_pb2.ModelInfo

    model_id: str
    device: str
    dtype: str
    max_image_bytes: int
    default_width: int
    default_height: int
    default_num_frames: int
    default_fps: int
    default_num_inference_steps: int
    max_pixels_per_frame: int
    max_num_frames: int
    max_num_inference_steps: int
    safety_checker: bool
    usd_per_output_pixel: float


@dataclass(frozen=True)
class AnimateModelList(ProtoData):
    """The animate server's loaded models, the default first."""

    PROTO = animate_pb2.ListModelsResponse

    models: tuple[AnimateModelInfo, ...]
    default_model_id: str


AnimateEvent = Progress | VideoHeader | VideoChunk | AnimateResult
