"""Typed Python clients for the imagewire services (blocking and asyncio)."""

from imagewire.client._channel import TlsConfig
from imagewire.client.animate import AnimateClient, AsyncAnimateClient, VideoSink
from imagewire.client.caption import AsyncCaptionClient, Caption, CaptionClient
from imagewire.client.errors import FieldViolation, ImagewireError

__all__ = [
    "AnimateClient",
    "AsyncAnimateClient",
    "AsyncCaptionClient",
    "Caption",
    "CaptionClient",
    "FieldViolation",
    "ImagewireError",
    "TlsConfig",
    "VideoSink",
]
