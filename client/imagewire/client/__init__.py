"""Typed Python clients for the imagewire services.

Each service has one I/O-free core (:class:`CaptionCore`, :class:`AnimateCore`: request building, deadlines,
metadata, response decoding) under a blocking and an asyncio client. Results are frozen dataclasses mirroring
the protos' messages; failed calls raise :class:`ImagewireError`. The request fields a method takes as keyword
arguments are typed too (:class:`AnimateArgs`, :class:`CaptionArgs`, generated from the protos), so a type
checker catches a misspelled field or a value of the wrong type before anything runs.
"""

from imagewire.client._channel import TlsConfig, service_config
from imagewire.client._core import CallOptions, PreparedCall, ServiceCore
from imagewire.client._resume import Resume
from imagewire.client._shell import AsyncShell, BlockingShell
from imagewire.client.animate import JOB_ID_KEY, AnimateArgs, AnimateCore, AnimateFields
from imagewire.client.animate import PARAMETERS as ANIMATE_PARAMETERS
from imagewire.client.animate_clients import AnimateClient, AsyncAnimateClient
from imagewire.client.animate_types import (
    AnimateEvent,
    AnimateModelInfo,
    AnimateModelList,
    AnimateResult,
    AnimateUsage,
    JobState,
    JobStatus,
    Preview,
    Progress,
    Stage,
    VideoChunk,
    VideoFormat,
    VideoHeader,
)
from imagewire.client.caption import (
    AsyncCaptionClient,
    Caption,
    CaptionArgs,
    CaptionClient,
    CaptionCore,
    CaptionFields,
    CaptionModelInfo,
    CaptionModelList,
    CaptionUsage,
)
from imagewire.client.errors import FieldViolation, ImagewireError
from imagewire.client.interrupted import Interrupted, Outcome, Stop
from imagewire.client.video_sink import ProvenanceChanged, VideoSink

__all__ = [
    "ANIMATE_PARAMETERS",
    "JOB_ID_KEY",
    "AnimateArgs",
    "AnimateClient",
    "AnimateCore",
    "AnimateEvent",
    "AnimateFields",
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
    "CaptionArgs",
    "CaptionClient",
    "CaptionCore",
    "CaptionFields",
    "CaptionModelInfo",
    "CaptionModelList",
    "CaptionUsage",
    "FieldViolation",
    "ImagewireError",
    "Interrupted",
    "JobState",
    "JobStatus",
    "Outcome",
    "PreparedCall",
    "Preview",
    "Progress",
    "ProvenanceChanged",
    "Resume",
    "ServiceCore",
    "Stage",
    "Stop",
    "TlsConfig",
    "VideoChunk",
    "VideoFormat",
    "VideoHeader",
    "VideoSink",
    "service_config",
]
