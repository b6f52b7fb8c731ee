"""Typed Python clients for the imagewire services.

Each service has one I/O-free core (:class:`CaptionCore`, :class:`AnimateCore`: request building, deadlines,
metadata, response decoding) under a blocking and an asyncio client. Results are frozen dataclasses mirroring
the protos' messages; failed calls raise :class:`ImagewireError`.
"""

from imagewire.client._channel import TlsConfig, service_config
from imagewire.client._core import CallOptions, PreparedCall, ServiceCore
from imagewire.client._shell import AsyncShell, BlockingShell
from imagewire.client.animate import PARAMETERS as ANIMATE_PARAMETERS
from imagewire.client.animate import AnimateClient, AnimateCore, AsyncAnimateClient, VideoSink
from imagewire.client.animate_types import (
    AnimateEvent,
    AnimateModelInfo,
    AnimateModelList,
    AnimateResult,
    AnimateUsage,
    Progress,
    Stage,
    VideoChunk,
    VideoFormat,
    VideoHeader,
)
from imagewire.client.caption import (
    AsyncCaptionClient,
    Caption,
    CaptionClient,
    CaptionCore,
    CaptionModelInfo,
    CaptionModelList,
    CaptionUsage,
)
from imagewire.client.errors import FieldViolation, ImagewireError

__all__ = [
    "ANIMATE_PARAMETERS",
    "AnimateClient",
    "AnimateCore",
    "AnimateEvent",
    "AnimateModelInfo",
    "AnimateModelList",
    "AnimateResult",
    "AnimateUsage",
    "AsyncAnimateClient",
    "AsyncCaptionClient",
    "AsyncShell",
    "BlockingShell",
    "CallOptions",
    "Caption",
    "CaptionClient",
    "CaptionCore",
    "CaptionModelInfo",
    "CaptionModelList",
    "CaptionUsage",
    "FieldViolation",
    "ImagewireError",
    "PreparedCall",
    "Progress",
    "ServiceCore",
    "Stage",
    "TlsConfig",
    "VideoChunk",
    "VideoFormat",
    "VideoHeader",
    "VideoSink",
    "service_config",
]
