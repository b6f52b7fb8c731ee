"""Streaming video encoding: RGB frames in, container bytes out as soon as the muxer writes them.

Fragmented MP4 (H.264) is the default: ``empty_moov`` writes the init segment (ftyp + moov) up front,
``frag_every_frame`` closes a fragment (moof + mdat) per frame and ``default_base_moof`` makes fragments
self-contained, so a player (or MSE) can start before the end. The mov muxer writes a frame's fragment when the
next frame arrives (or at the end), so bytes lag the encoder by exactly one frame. ``tune=zerolatency`` turns off
x264's look-ahead and B-frames, which would otherwise hold frames back. WebM (VP9) is the alternative, written as
live WebM with one cluster per frame for the same reason.

The encoder is opened when it is built, so its parameters are known before the first frame: ``codecs`` is the
RFC 6381 codecs string of what it will write, read from the encoder's own configuration (the profile and level
bytes of libx264's sequence parameter set; VP9's profile and bit depth from the pixel format, and its level from
the VP9 level limits, since the VP9 bitstream signals none).

Output is deterministic for equal frames: no wall-clock timestamps, no library version strings
(``fflags=+bitexact``) and a fixed encoder thread count (x264's sliced threads make the bitstream depend on the
thread count, which would otherwise follow the machine's core count).
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import cast

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


# The VP9 levels: (level as in the codecs string, most luma samples per second, largest luma picture, longest side).
_VP9_LEVELS = (
    (10, 829_440, 36_864, 512), (11, 2_764_800, 73_728, 768), (20, 4_608_000, 122_880, 960),
    (21, 9_216_000, 245_760, 1_344), (30, 20_736_000, 552_960, 2_048), (31, 36_864_000, 983_040, 2_752),
    (40, 83_558_400, 2_228_224, 4_160), (41, 160_432_128, 2_228_224, 4_160), (50, 311_951_360, 8_912_896, 8_384),
    (51, 588_251_136, 8_912_896, 8_384), (52, 1_176_502_272, 8_912_896, 8_384),
    (60, 1_176_502_272, 35_651_584, 16_832), (61, 2_353_004_544, 35_651_584, 16_832),
    (62, 4_706_009_088, 35_651_584, 16_832),
)
# libvpx picks the VP9 profile from the pixel format it is given: (profile, bit depth).
_VP9_PROFILES = {"yuv420p": (0, 8)}
# An H.264 NAL unit's type is the low five bits of its first byte; 7 is a sequence parameter set.
_H264_SPS = 7


def h264_codecs(extradata: bytes) -> str:
    """``avc1.PPCCLL`` from the first sequence parameter set in an encoder's Annex B extradata: its profile_idc,
    constraint flags and level_idc bytes, the three bytes an MP4 muxer copies into the ``avcC`` box."""
    for nal in re.split(b"\x00\x00\x01", extradata)[1:]:
        if len(nal) >= 4 and nal[0] & 0x1F == _H264_SPS:
            return "avc1." + nal[1:4].hex()
    raise ValueError("the H.264 encoder wrote no sequence parameter set")


def vp9_codecs(pix_fmt: str, width: int, height: int, fps: int) -> str:
    """``vp09.PP.LL.DD``: the profile and bit depth libvpx uses for ``pix_fmt`` and the lowest level whose
    limits the picture size and sample rate fit."""
    profile, depth = _VP9_PROFILES[pix_fmt]
    size = width * height
    for level, samples_per_s, picture, side in _VP9_LEVELS:
        if size * fps <= samples_per_s and size <= picture and max(width, height) <= side:
            return f"vp09.{profile:02d}.{level:02d}.{depth:02d}"
    raise ValueError(f"{width}x{height} at {fps} fps is beyond every VP9 level")


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

    ``gop_frames`` is the keyframe interval: each keyframe starts a group a player can seek to. ``codecs`` is the
    RFC 6381 codecs string of the stream, known from construction on.
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
        # Every spec's encoder is a video codec; PyAV types a stream added by a codec name it cannot read as any kind.
        stream = cast(av.VideoStream, self._container.add_stream(self.spec.encoder, rate=fps,
                                                                 options=dict(self.spec.encoder_options)))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop_frames or 2 * fps
        self._stream = stream
        self._closed = False
        # Opens the encoder now, so its parameter sets exist before the first frame, and writes the container's
        # header into the sink (it leaves with the first frame's bytes).
        self._container.start_encoding()
        context = stream.codec_context
        self.codecs = (h264_codecs(bytes(context.extradata or b"")) if self.spec.codec == "h264"
                       else vp9_codecs(context.pix_fmt, width, height, fps))  # type: ignore[arg-type] # set above

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
