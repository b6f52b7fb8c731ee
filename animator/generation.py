"""One generation on the device thread, written into its job: progress and previews while it denoises, then the
header, the video decoded and encoded chunk by chunk (each piece posted as soon as it exists), then the result.
A video of several segments repeats the denoising and the decode per segment into the same file; with an
interpolation factor, the in-between frames are encoded as soon as each pair of frames exists."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from animator import preview
from animator.backend import Step, VideoBackend, generator
from animator.events import Chunk, Event, Header, Preview, Progress, Result, Stage, Usage
from animator.interpolation import Interpolator, between
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
    """Run one generation, posting its events to the job; raises Stop when the job is asked to stop.

    A video of several segments denoises them one after the other, each from the previous one's last frame, all
    drawing from one generator seeded once, and streams them through one encoder as one file."""
    spec, post = job.spec, job.post
    params, image = spec.params, job.image
    assert image is not None, "the job has already run"
    job.check()
    checked = spec.safety_check and checker is not None
    nsfw = checker.check(image) if checked and checker is not None else False
    noise = generator(params.seed)
    video: _VideoStream | None = None
    try:
        conditioning = image
        for segment in range(1, spec.segments + 1):
            latents = _denoise(job, conditioning, segment, noise, stats)
            if video is None:  # the header once the first bytes are about to follow, as for one segment
                video = _VideoStream(job)
            conditioning = video.add(latents, segment)
        assert video is not None
        total_bytes, digest = video.finish()
    finally:
        if video is not None:
            video.abort()
    pixels = params.width * params.height * spec.output_frames
    post(Result(
        total_bytes=total_bytes, sha256=digest, seed=params.seed, safety_checked=checked, nsfw=nsfw,
        usage=Usage(output_pixels=pixels, usd_per_output_pixel=usd_per_output_pixel,
                    price_usd=pixels * usd_per_output_pixel),
        provenance=job.provenance,
    ))


def _denoise(job: Job, image: Image.Image, segment: int, noise: torch.Generator, stats: EngineStats) -> torch.Tensor:
    """One segment's conditioning and denoising loop, with its progress and previews."""
    spec, backend, post = job.spec, job.backend, job.post
    params, segments = spec.params, spec.segments
    post(Progress(Stage.ENCODE_IMAGE, 0, 1, segment, segments))

    def on_step(step: Step) -> None:
        stats.steps += 1
        post(Progress(Stage.DENOISE, step.done, step.total, segment, segments))
        if spec.preview_every and step.done % spec.preview_every == 0 and step.denoised is not None:
            post(make_preview(backend, step, params, segment))
        job.check()

    latents = backend.denoise(image, params, on_step, noise)
    job.check()
    return latents


def make_preview(backend: VideoBackend, step: Step, params: GenerationParams, segment: int = 1) -> Preview:
    """A preview of a step's clean-latent estimate (which the step must have)."""
    assert step.denoised is not None
    frames = backend.preview_frames(step.denoised)
    image, width, height = preview.encode(frames, fps=params.fps, num_frames=params.num_frames)
    return Preview(image, preview.MIME_TYPE, width, height, len(frames), step.done, step.total, segment)


class _VideoStream:
    """The job's one video file: segments' latents decoded chunk by chunk, interpolated, encoded, and each piece
    posted as soon as the muxer writes it. Posts the header when it opens."""

    def __init__(self, job: Job) -> None:
        spec = job.spec
        self._job = job
        # Opened before the header, which names the encoder's exact codec parameters.
        self._encoder = StreamingVideoEncoder(spec.format, spec.params.width, spec.params.height, spec.output_fps)
        self._interpolator = Interpolator(spec.interpolate)
        self._sender = ByteSender(job.post)
        job.post(Header(
            mime_type=self._encoder.spec.mime_type, container=self._encoder.spec.container,
            codec=self._encoder.spec.codec, width=spec.params.width, height=spec.params.height, fps=spec.output_fps,
            num_frames=spec.output_frames, seed=spec.params.seed, model_id=job.backend.model_id,
            codecs=self._encoder.codecs,
        ))

    def add(self, latents: torch.Tensor, segment: int) -> Image.Image:
        """Decode and stream one segment (less its first frame after the first segment: the previous segment's
        last); returns its last frame, the next segment's conditioning image."""
        job, spec, post = self._job, self._job.spec, self._job.post
        frames_in_segment, segments = spec.params.num_frames, spec.segments
        done = 0
        last: np.ndarray | None = None
        post(Progress(Stage.DECODE, 0, frames_in_segment, segment, segments))
        with contextlib.closing(job.backend.decode(latents, spec.params)) as chunks:
            for frames in chunks:
                new = frames[1:] if segment > 1 and done == 0 else frames
                done += len(frames)
                post(Progress(Stage.DECODE, done, frames_in_segment, segment, segments))
                for frame in new:
                    for written in self._interpolator.push(frame):
                        # Per frame, so each frame's bytes leave as soon as the muxer writes them.
                        self._sender.send(self._encoder.write(written))
                last = frames[-1]
                post(Progress(Stage.ENCODE_VIDEO, self._encoder.frames_written, spec.output_frames, segment,
                              segments))
                job.check()
        assert last is not None, "the model decoded no frames"
        return Image.fromarray(last)

    def finish(self) -> tuple[int, bytes]:
        """The end of the file; its length and SHA-256."""
        self._sender.send(self._encoder.close())
        return self._sender.offset, self._sender.digest.digest()

    def abort(self) -> None:
        self._encoder.abort()


def warm_up(backend: VideoBackend, image: Image.Image, params: GenerationParams) -> None:
    """One minimal generation, preview and encode with no job: the lazy initialisation a first caller would pay."""
    steps: list[Step] = []
    latents = backend.denoise(image, params, steps.append)
    if steps and steps[-1].denoised is not None:
        make_preview(backend, steps[-1], params)
    encoder = StreamingVideoEncoder(VideoFormat.MP4_H264, params.width, params.height, params.fps)
    for frames in backend.decode(latents, params):
        encoder.write(frames)
        between(frames[0], frames[-1], 2)  # OpenCV's first flow and warp
    encoder.close()
