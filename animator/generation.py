"""One generation on the device thread, from its header to its result: denoise, then decode and encode the video
chunk by chunk, emitting each piece of the stream as soon as it exists."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from animator.backend import VideoBackend
from animator.channel import EventChannel, Stop
from animator.events import Chunk, Event, Header, Progress, Result, Stage, Usage
from animator.limits import CHUNK_BYTES
from animator.params import GenerationParams
from animator.safety import SafetyChecker
from animator.video import StreamingVideoEncoder, VideoFormat
from imagewire_serving import errors
from imagewire_serving.engine import EngineStats


@dataclass
class Job:
    """A validated request waiting for, or running on, the device."""

    backend: VideoBackend
    image: Image.Image
    params: GenerationParams
    fmt: VideoFormat
    safety_check: bool
    deadline: float | None
    channel: EventChannel
    enqueued: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        """Raise Stop when the caller left or the deadline passed."""
        if self.channel.cancelled.is_set():
            raise Stop(errors.Cancelled("the call was cancelled"))
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise Stop(errors.DeadlineExceeded("the deadline passed during the generation"))


class ByteSender:
    """Cuts encoded bytes into Chunk events of at most CHUNK_BYTES, tracking the offset and the digest."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self.offset = 0
        self.digest = hashlib.sha256()

    def send(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK_BYTES):
            piece = data[start : start + CHUNK_BYTES]
            self._emit(Chunk(piece, self.offset))
            self.digest.update(piece)
            self.offset += len(piece)


def generate(job: Job, checker: SafetyChecker | None, usd_per_output_pixel: float, stats: EngineStats) -> None:
    """Run one generation, emitting its events; raises Stop when the caller left or the deadline passed."""
    params, backend, emit = job.params, job.backend, job.channel.put
    job.check()
    # Opened before the header, which names the encoder's exact codec parameters.
    encoder = StreamingVideoEncoder(job.fmt, params.width, params.height, params.fps)
    try:
        spec = encoder.spec
        emit(Header(
            mime_type=spec.mime_type, container=spec.container, codec=spec.codec, width=params.width,
            height=params.height, fps=params.fps, num_frames=params.num_frames, seed=params.seed,
            model_id=backend.model_id, codecs=encoder.codecs,
        ))
        checked = job.safety_check and checker is not None
        nsfw = checker.check(job.image) if checked and checker is not None else False
        emit(Progress(Stage.ENCODE_IMAGE, 0, 1))

        def on_step(done: int, total: int) -> None:
            stats.steps += 1
            emit(Progress(Stage.DENOISE, done, total))
            job.check()

        latents = backend.denoise(job.image, params, on_step)
        job.check()
        total_bytes, digest = _decode_and_encode(job, latents, encoder)
    finally:
        encoder.abort()
    pixels = params.width * params.height * params.num_frames
    emit(Result(
        total_bytes=total_bytes, sha256=digest, seed=params.seed, safety_checked=checked, nsfw=nsfw,
        usage=Usage(output_pixels=pixels, usd_per_output_pixel=usd_per_output_pixel,
                    price_usd=pixels * usd_per_output_pixel),
    ))


def _decode_and_encode(job: Job, latents: object, encoder: StreamingVideoEncoder) -> tuple[int, bytes]:
    """Decode latents chunk by chunk and stream each frame's bytes as the muxer writes them."""
    params, emit = job.params, job.channel.put
    sender = ByteSender(emit)
    done = 0
    emit(Progress(Stage.DECODE, 0, params.num_frames))
    with contextlib.closing(job.backend.decode(latents, params)) as chunks:  # type: ignore[arg-type]
        for frames in chunks:
            done += len(frames)
            emit(Progress(Stage.DECODE, done, params.num_frames))
            for frame in frames:
                # Per frame, so each frame's bytes leave as soon as the muxer writes them.
                sender.send(encoder.write(frame))
            emit(Progress(Stage.ENCODE_VIDEO, done, params.num_frames))
            job.check()
    sender.send(encoder.close())
    return sender.offset, sender.digest.digest()


def warm_up(backend: VideoBackend, image: Image.Image, params: GenerationParams) -> None:
    """One minimal generation and encode with no reader: the lazy initialisation a first caller would pay."""
    latents = backend.denoise(image, params, lambda done, total: None)
    encoder = StreamingVideoEncoder(VideoFormat.MP4_H264, params.width, params.height, params.fps)
    for frames in backend.decode(latents, params):
        encoder.write(frames)
    encoder.close()
