"""Streaming video encoding: RGB frames in, container bytes out as soon as the muxer writes them.

Fragmented MP4 (H.264) is the default: ``empty_moov`` writes the init segment (ftyp + moov) up front,
``frag_every_frame`` closes a fragment (moof + mdat) per frame and ``default_base_moof`` makes fragments
self-contained, so a player (or MSE) can start before the end. The mov muxer writes a frame's fragment when the
next frame arrives (or at the end), so bytes lag the encoder by exactly one frame. ``tune=zerolatency`` turns off
x264's look-ahead and B-frames, which would otherwise hold frames back. WebM (VP9) is the alternative, written as
live WebM with one cluster per frame for the same reason.

Output is deterministic for equal frames: no wall-clock timestamps, no library version strings
(``fflags=+bitexact``) and a fixed encoder thread count (x264's sliced threads make the bitstream depend on the
thread count, which would otherwise follow the machine's core count).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import av
import numpy as np

_LOGGER = logging.getLogger(__name__)

# Fixed so equal frames give equal bytes on any machine (see the module docstring).
ENCODER_THREADS = 4


# Member names of VideoFormat are the contract's VideoFormat value names less this prefix.
CONTRACT_PREFIX = "VIDEO_FORMAT_"


class VideoFormat(enum.Enum):
    """The containers and codecs the server writes."""

    MP4_H264 = "mp4"
    WEBM_VP9 = "webm"


@dataclass(frozen=True)
class FormatSpec:
    """How one VideoFormat is described to clients and configured in FFmpeg."""

    mime_type: str
    container: str
    codec: str
    muxer: str
    encoder: str
    container_options: dict[str, str]
    encoder_options: dict[str, str]


SPECS: dict[VideoFormat, FormatSpec] = {
    VideoFormat.MP4_H264: FormatSpec(
        mime_type="video/mp4",
        container="mp4",
        codec="h264",
        muxer="mp4",
        encoder="libx264",
        container_options={
            "movflags": "frag_keyframe+empty_moov+default_base_moof+frag_every_frame",
            "fflags": "+bitexact",
        },
        encoder_options={
            "preset": "veryfast",
            "tune": "zerolatency",
            "crf": "18",
            "threads": str(ENCODER_THREADS),
        },
    ),
    VideoFormat.WEBM_VP9: FormatSpec(
        mime_type="video/webm",
        container="webm",
        codec="vp9",
        muxer="webm",
        encoder="libvpx-vp9",
        container_options={
            "live": "1",
            "cluster_size_limit": "1",  # a cluster per frame: bytes leave as frames are encoded
            "fflags": "+bitexact",
        },
        encoder_options={
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",  # no look-ahead buffer holding frames back
            "crf": "30",
            "b": "0",
            "row-mt": "1",
            "threads": str(ENCODER_THREADS),
        },
    ),
}


class _Sink:
    """A write-only file for the muxer: no seek or tell, so FFmpeg never goes back to patch earlier bytes."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class StreamingVideoEncoder:
    """Encodes RGB uint8 frames one at a time; every call returns the container bytes produced since the last.

    ``gop_frames`` is the keyframe interval: each keyframe starts a group a player can seek to.
    """

    def __init__(self, fmt: VideoFormat, width: int, height: int, fps: int, *, gop_frames: int | None = None) -> None:
        self.spec = SPECS[fmt]
        self.width = width
        self.height = height
        self.fps = fps
        self.frames_written = 0
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=self.spec.muxer,
                                  options=dict(self.spec.container_options))
        stream = self._container.add_stream(self.spec.encoder, rate=fps, options=dict(self.spec.encoder_options))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop_frames or 2 * fps
        self._stream = stream
        self._closed = False

    def write(self, frames: np.ndarray) -> bytes:
        """Encode frames of shape (n, height, width, 3) or (height, width, 3), uint8 RGB."""
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames of {self.height}x{self.width}x3, got {frames.dtype} "
                             f"{frames.shape}")
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.frames_written
            self._container.mux(self._stream.encode(video_frame))
            self.frames_written += 1
        return self._sink.take()

    def close(self) -> bytes:
        """Flush the encoder and the muxer; returns the last bytes of the file."""
        if self._closed:
            return b""
        self._closed = True
        self._container.mux(self._stream.encode(None))
        self._container.close()
        return self._sink.take()

    def abort(self) -> None:
        """Release FFmpeg's resources without finishing the file."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except (av.error.FFmpegError, ValueError):  # an unfinished file may fail to finalise; it is discarded
                _LOGGER.debug("discarding an unfinished video", exc_info=True)
