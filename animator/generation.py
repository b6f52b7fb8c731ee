"""One generation on the device thread, written into its job: progress and previews while it denoises, then the
header, the video decoded and encoded chunk by chunk (each piece posted as soon as it exists), then the result."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

import torch
from PIL import Image

from animator import preview
from animator.backend import Step, VideoBackend
from animator.events import Chunk, Event, Header, Preview, Progress, Result, Stage, Usage
from animator.jobs import Job
from animator.limits import CHUNK_BYTES
from animator.params import GenerationParams
from animator.safety import SafetyChecker
from animator.video import StreamingVideoEncoder, VideoFormat
from imagewire_serving.engine import EngineStats


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
    """Run one generation, posting its events to the job; raises Stop when the job is asked to stop."""
    spec, backend, post = job.spec, job.backend, job.post
    params, image = spec.params, job.image
    assert image is not None, "the job has already run"
    job.check()
    checked = spec.safety_check and checker is not None
    nsfw = checker.check(image) if checked and checker is not None else False
    post(Progress(Stage.ENCODE_IMAGE, 0, 1))

    def on_step(step: Step) -> None:
        stats.steps += 1
        post(Progress(Stage.DENOISE, step.done, step.total))
        if spec.preview_every and step.done % spec.preview_every == 0 and step.denoised is not None:
            post(make_preview(backend, step, params))
        job.check()

    latents = backend.denoise(image, params, on_step)
    job.check()
    # Opened before the header, which names the encoder's exact codec parameters.
    encoder = StreamingVideoEncoder(spec.format, params.width, params.height, params.fps)
    try:
        # The header once the bytes are about to follow: what a player needs to set up, seed included.
        post(Header(
            mime_type=encoder.spec.mime_type, container=encoder.spec.container, codec=encoder.spec.codec,
            width=params.width, height=params.height, fps=params.fps, num_frames=params.num_frames,
            seed=params.seed, model_id=backend.model_id, codecs=encoder.codecs,
        ))
        total_bytes, digest = _decode_and_encode(job, latents, encoder)
    finally:
        encoder.abort()
    pixels = params.width * params.height * params.num_frames
    post(Result(
        total_bytes=total_bytes, sha256=digest, seed=params.seed, safety_checked=checked, nsfw=nsfw,
        usage=Usage(output_pixels=pixels, usd_per_output_pixel=usd_per_output_pixel,
                    price_usd=pixels * usd_per_output_pixel),
        provenance=job.provenance,
    ))


def make_preview(backend: VideoBackend, step: Step, params: GenerationParams) -> Preview:
    """A preview of a step's clean-latent estimate (which the step must have)."""
    assert step.denoised is not None
    frames = backend.preview_frames(step.denoised)
    image, width, height = preview.encode(frames, fps=params.fps, num_frames=params.num_frames)
    return Preview(image, preview.MIME_TYPE, width, height, len(frames), step.done, step.total)


def _decode_and_encode(job: Job, latents: torch.Tensor, encoder: StreamingVideoEncoder) -> tuple[int, bytes]:
    """Decode latents chunk by chunk and post each frame's bytes as the muxer writes them."""
    params, post = job.spec.params, job.post
    sender = ByteSender(post)
    done = 0
    post(Progress(Stage.DECODE, 0, params.num_frames))
    with contextlib.closing(job.backend.decode(latents, params)) as chunks:
        for frames in chunks:
            done += len(frames)
            post(Progress(Stage.DECODE, done, params.num_frames))
            for frame in frames:
                # Per frame, so each frame's bytes leave as soon as the muxer writes them.
                sender.send(encoder.write(frame))
            post(Progress(Stage.ENCODE_VIDEO, done, params.num_frames))
            job.check()
    sender.send(encoder.close())
    return sender.offset, sender.digest.digest()


def warm_up(backend: VideoBackend, image: Image.Image, params: GenerationParams) -> None:
    """One minimal generation, preview and encode with no job: the lazy initialisation a first caller would pay."""
    steps: list[Step] = []
    latents = backend.denoise(image, params, steps.append)
    if steps and steps[-1].denoised is not None:
        make_preview(backend, steps[-1], params)
    encoder = StreamingVideoEncoder(VideoFormat.MP4_H264, params.width, params.height, params.fps)
    for frames in backend.decode(latents, params):
        encoder.write(frames)
    encoder.close()
