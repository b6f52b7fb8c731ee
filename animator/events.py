"""The events of an animate stream, in plain values: the job's status, progress, previews, the header, video chunks
and the result."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from imagewire_serving.provenance import Provenance


class Stage(enum.IntEnum):
    """The phases of a generation, in order (named as the contract's Stage values, less the prefix)."""

    QUEUED = 1
    ENCODE_IMAGE = 2
    DENOISE = 3
    DECODE = 4
    ENCODE_VIDEO = 5


class JobState(enum.IntEnum):
    """Where a job is in its life (named as the contract's JobState values, less the prefix)."""

    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def finished(self) -> bool:
        return self >= JobState.SUCCEEDED


@dataclass(frozen=True)
class JobStatus:
    """A job's id and state, as one call sees it: the first event of every stream."""

    job_id: str
    state: JobState
    # 1 = next; 0 when not waiting.
    queue_position: int
    # Whether this call started the job (False: it attached to an existing one).
    created: bool
    # The video bytes produced so far.
    available_bytes: int
    # The job's model's provenance key: whether another stream's bytes continue this one's.
    provenance_key: str


@dataclass(frozen=True)
class Preview:
    """A small encoded image of a few frames, approximated from the latents after ``step`` of ``total`` steps."""

    image: bytes
    mime_type: str
    width: int
    height: int
    num_frames: int
    step: int
    total: int
    # The segment denoised (1 = the first).
    segment: int = 1


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` units of ``stage`` are done (for QUEUED: the position in the queue), in ``segment``
    of ``segments`` (0 of 0 while queued). DENOISE and DECODE count within the segment, ENCODE_VIDEO the whole
    video's frames."""

    stage: Stage
    step: int
    total: int
    segment: int = 0
    segments: int = 0


@dataclass(frozen=True)
class Header:
    """What the following bytes are."""

    mime_type: str
    container: str
    codec: str
    width: int
    height: int
    fps: int
    num_frames: int
    seed: int
    model_id: str
    codecs: str


@dataclass(frozen=True)
class Chunk:
    """The next bytes of the video, starting at ``offset``."""

    data: bytes
    offset: int


@dataclass(frozen=True)
class Usage:
    """What a generation produced and its price."""

    output_pixels: int
    usd_per_output_pixel: float
    price_usd: float


@dataclass(frozen=True)
class Result:
    """The summary of a finished generation."""

    total_bytes: int
    sha256: bytes
    seed: int
    safety_checked: bool
    nsfw: bool
    usage: Usage
    provenance: Provenance


Event = JobStatus | Progress | Preview | Header | Chunk | Result
