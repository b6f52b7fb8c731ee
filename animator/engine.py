"""The animate engine: validation, one device worker with a bounded queue, streaming events, cancellation.

Pure typed Python: no grpc, no protobuf. Callers pass an :class:`AnimateInput` to :meth:`AnimateEngine.animate`
and iterate the events it yields: :class:`Progress` repeatedly, a :class:`Header` before the first
:class:`Chunk` of video bytes, and one :class:`Result` last. Errors are the domain errors of
:mod:`imagewire_serving.errors`.

One generation runs at a time on the device, in a worker thread. Its events cross to the event loop through a
per-request channel with a byte budget, so a slow reader pauses the generation instead of letting encoded video
pile up in memory. A reader that goes away (cancelled call) or a deadline that passes stops the generation at the
next denoising step or decoded chunk, and the worker takes the next request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from animator.backend import GenerationParams, ModelDefaults, VideoBackend
from animator.safety import SafetyChecker
from animator.video import SPECS, StreamingVideoEncoder, VideoFormat
from imagewire_serving import errors
from imagewire_serving.errors import FieldViolation
from imagewire_serving.images import ImageLimits, decode_image
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

MIN_SIDE = 64
MAX_MOTION_BUCKET_ID = 1023
MAX_GUIDANCE_SCALE = 20.0
CHUNK_BYTES = 1024 * 1024
# The contract's format names; "" is the default (MP4).
FORMATS = {"": VideoFormat.MP4_H264, "mp4": VideoFormat.MP4_H264, "webm": VideoFormat.WEBM_VP9}


@dataclass(frozen=True)
class EngineLimits:
    """Operator-set bounds and prices."""

    image: ImageLimits = ImageLimits()
    max_pixels_per_frame: int = 1024 * 1024
    max_num_frames: int = 50
    max_num_inference_steps: int = 100
    max_fps: int = 60
    max_queue: int = 8
    usd_per_output_pixel: float = 1.3563368e-08
    # Encoded video a request may have waiting for its reader before the generation pauses.
    max_pending_bytes: int = 8 * CHUNK_BYTES


@dataclass(frozen=True)
class AnimateInput:
    """One animate request in plain values. None takes the model's default; ``format`` is "", "mp4" or "webm"."""

    image: bytes
    model_id: str = ""
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    num_inference_steps: int | None = None
    seed: int | None = None
    decode_chunk_size: int | None = None
    safety_check: bool = False
    format: str = ""
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None


class Stage(enum.IntEnum):
    """The phases of a generation, in order."""

    QUEUED = 1
    ENCODE_IMAGE = 2
    DENOISE = 3
    DECODE = 4
    ENCODE_VIDEO = 5


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` units of ``stage`` are done (for QUEUED: the position in the queue)."""

    stage: Stage
    step: int
    total: int


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


@dataclass(frozen=True)
class Chunk:
    """The next bytes of the video, starting at ``offset``."""

    data: bytes
    offset: int


@dataclass(frozen=True)
class Usage:
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


Event = Progress | Header | Chunk | Result


@dataclass
class EngineStats:
    """Counters of the device worker, for tests and diagnostics."""

    generations_started: int = 0
    generations_completed: int = 0
    generations_stopped: int = 0
    denoising_steps: int = 0


class _Stop(Exception):
    """Raised inside the worker (also from the pipeline's step callback) to abandon a generation."""

    def __init__(self, error: errors.ServingError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class _Channel:
    """Events from the worker thread to the request's coroutine, bounded by the bytes not yet read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending_bytes: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue()
        self._max_pending = max_pending_bytes
        self._pending = 0
        self._space = threading.Condition()
        self.cancelled = threading.Event()

    def put(self, event: Event) -> None:
        """From the worker: deliver an event, waiting while too many bytes are unread. Raises _Stop if cancelled."""
        size = len(event.data) if isinstance(event, Chunk) else 0
        with self._space:
            while self._pending and self._pending + size > self._max_pending and not self.cancelled.is_set():
                self._space.wait(timeout=0.5)
            if self.cancelled.is_set():
                raise _Stop(errors.Cancelled("the call was cancelled"))
            self._pending += size
        self._deliver(event)

    def put_nowait(self, event: Event) -> None:
        """From the event loop: deliver an event that carries no bytes."""
        self._queue.put_nowait(event)

    def close(self, error: BaseException | None) -> None:
        """From the worker: the last item."""
        self._deliver(_End(error))

    def fail_nowait(self, error: BaseException) -> None:
        """From the event loop: end the stream with an error before the worker took the request."""
        self._queue.put_nowait(_End(error))

    def _deliver(self, item: Event | _End) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is reading any more
            self.cancelled.set()
            raise _Stop(errors.Unavailable("the server is shutting down")) from None

    async def get(self) -> Event | _End:
        item = await self._queue.get()
        if isinstance(item, Chunk):
            with self._space:
                self._pending -= len(item.data)
                self._space.notify_all()
        return item

    def cancel(self) -> None:
        self.cancelled.set()
        with self._space:
            self._space.notify_all()


@dataclass
class _Job:
    backend: VideoBackend
    image: Image.Image
    params: GenerationParams
    fmt: VideoFormat
    safety_check: bool
    deadline: float | None
    channel: _Channel
    enqueued: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        """Raise _Stop when the caller left or the deadline passed."""
        if self.channel.cancelled.is_set():
            raise _Stop(errors.Cancelled("the call was cancelled"))
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _Stop(errors.DeadlineExceeded("the deadline passed during the generation"))


class AnimateEngine:
    """Generates videos with one or more loaded models that share one device worker thread.

    The first model is the default. Requests wait in a queue of at most ``limits.max_queue``; past that,
    :meth:`animate` raises Overloaded at once.
    """

    def __init__(
        self,
        backends: Sequence[VideoBackend],
        limits: EngineLimits,
        metrics: Metrics,
        *,
        safety_checker: SafetyChecker | None = None,
    ) -> None:
        if not backends:
            raise ValueError("at least one model is needed")
        self.limits = limits
        self.safety_checker = safety_checker
        self.stats = EngineStats()
        self._backends = {backend.model_id: backend for backend in backends}
        self.default_model_id = backends[0].model_id
        self._metrics = metrics
        # One thread: the device runs one generation at a time, whichever model it belongs to.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="animate-device")
        self._waiting: collections.deque[_Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._running: _Job | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def backends(self) -> list[VideoBackend]:
        return list(self._backends.values())

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def backend(self, model_id: str) -> VideoBackend:
        """The backend of ``model_id`` ("" for the default), or NotFound."""
        backend = self._backends.get(model_id or self.default_model_id)
        if backend is None:
            raise errors.NotFound(f"model {model_id!r} is not loaded; available: {', '.join(self._backends)}")
        return backend

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="animate-worker")

    async def close(self) -> None:
        """Stop the worker: queued requests fail with Unavailable, the running one stops at its next step."""
        running = self._running  # read first: cancelling the worker task clears it
        if running is not None:
            running.channel.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._waiting:
            self._waiting.popleft().channel.fail_nowait(errors.Unavailable("the server is shutting down"))
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    def resolve(self, request: AnimateInput, defaults: ModelDefaults) -> tuple[GenerationParams, VideoFormat]:
        """Apply the model's defaults and check every field against the limits, naming all bad fields at once."""
        violations: list[FieldViolation] = []
        params, fmt = self._resolve(request, defaults, violations)
        errors.collect(violations)
        return params, fmt

    def _resolve(
        self, request: AnimateInput, defaults: ModelDefaults, violations: list[FieldViolation]
    ) -> tuple[GenerationParams, VideoFormat]:
        limits = self.limits

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        def bound(name: str, value: float, low: float, high: float) -> None:
            if not (math.isfinite(value) and low <= value <= high):
                violations.append(FieldViolation(name, f"must be {low}..{high}, not {value}"))

        width = int(pick(request.width, defaults.width))
        height = int(pick(request.height, defaults.height))
        for name, side in (("width", width), ("height", height)):
            if side % 8 or side < MIN_SIDE:
                violations.append(FieldViolation(name, f"must be a multiple of 8 and at least {MIN_SIDE}, not {side}"))
        if width * height > limits.max_pixels_per_frame:
            too_many = f"width x height = {width * height} pixels; the limit is {limits.max_pixels_per_frame}"
            violations += [FieldViolation("width", too_many), FieldViolation("height", too_many)]
        num_frames = int(pick(request.num_frames, defaults.num_frames))
        bound("num_frames", num_frames, 1, limits.max_num_frames)
        fps = int(pick(request.fps, defaults.fps))
        bound("fps", fps, 1, limits.max_fps)
        motion_bucket_id = int(pick(request.motion_bucket_id, defaults.motion_bucket_id))
        bound("motion_bucket_id", motion_bucket_id, 0, MAX_MOTION_BUCKET_ID)
        noise_aug_strength = float(pick(request.noise_aug_strength, defaults.noise_aug_strength))
        bound("noise_aug_strength", noise_aug_strength, 0.0, 1.0)
        steps = int(pick(request.num_inference_steps, defaults.num_inference_steps))
        bound("num_inference_steps", steps, 1, limits.max_num_inference_steps)
        decode_chunk_size = int(pick(request.decode_chunk_size, defaults.decode_chunk_size))
        bound("decode_chunk_size", decode_chunk_size, 1, limits.max_num_frames)
        min_guidance = float(pick(request.min_guidance_scale, defaults.min_guidance_scale))
        bound("min_guidance_scale", min_guidance, 0.0, MAX_GUIDANCE_SCALE)
        max_guidance = float(pick(request.max_guidance_scale, defaults.max_guidance_scale))
        bound("max_guidance_scale", max_guidance, 0.0, MAX_GUIDANCE_SCALE)
        seed = secrets.randbits(63) if request.seed is None else request.seed
        if not 0 <= seed < 2**64:
            violations.append(FieldViolation("seed", "must be an unsigned 64-bit integer"))
        fmt = FORMATS.get(request.format)
        if fmt is None:
            violations.append(FieldViolation("format", f"unknown video format {request.format!r}"))
            fmt = VideoFormat.MP4_H264
        params = GenerationParams(
            width=width,
            height=height,
            num_frames=num_frames,
            fps=fps,
            motion_bucket_id=motion_bucket_id,
            noise_aug_strength=noise_aug_strength,
            num_inference_steps=steps,
            seed=seed,
            decode_chunk_size=min(decode_chunk_size, num_frames),
            min_guidance_scale=min_guidance,
            max_guidance_scale=max_guidance,
        )
        return params, fmt

    async def animate(self, request: AnimateInput, *, deadline: float | None = None) -> AsyncIterator[Event]:
        """Generate one video, yielding its events as they happen.

        ``deadline`` is a time.monotonic() instant; past it the generation stops and DeadlineExceeded is raised.
        Leaving the iteration early (closing the generator, a cancelled task) stops the generation.
        """
        submitted = time.monotonic()
        backend = self.backend(request.model_id)
        violations: list[FieldViolation] = []
        params, fmt = self._resolve(request, backend.defaults, violations)
        image: Image.Image | None = None
        try:
            image = await asyncio.to_thread(decode_image, request.image, self.limits.image)
        except errors.InvalidArgument as error:
            violations[:0] = error.violations
        errors.collect(violations)
        assert image is not None
        job = self._submit(backend, image, params, fmt, request.safety_check, deadline)
        first_byte = True
        try:
            while True:
                item = await job.channel.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                if isinstance(item, Chunk):
                    if first_byte:
                        first_byte = False
                        self._metrics.observe_first_byte(backend.model_id, time.monotonic() - submitted)
                    self._metrics.add_streamed_bytes(backend.model_id, len(item.data))
                yield item
        finally:
            job.channel.cancel()  # a no-op once the generation finished; stops it when the caller left early
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
                self._queue_changed()

    def _submit(
        self,
        backend: VideoBackend,
        image: Image.Image,
        params: GenerationParams,
        fmt: VideoFormat,
        safety_check: bool,
        deadline: float | None,
    ) -> _Job:
        if len(self._waiting) >= self.limits.max_queue:
            raise errors.Overloaded(f"the generation queue is full ({self.limits.max_queue} waiting); retry later")
        channel = _Channel(asyncio.get_running_loop(), self.limits.max_pending_bytes)
        job = _Job(backend, image, params, fmt, safety_check, deadline, channel)
        self._waiting.append(job)
        self._queue_changed()
        self._arrived.set()
        return job

    def _queue_changed(self) -> None:
        """Tell every waiting request its position (1 = next) and update the queue-depth gauge."""
        total = len(self._waiting)
        for position, job in enumerate(self._waiting, start=1):
            job.channel.put_nowait(Progress(Stage.QUEUED, position, total))
        for model_id in self._backends:
            self._metrics.set_queue_depth(model_id, sum(1 for j in self._waiting if j.backend.model_id == model_id))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            job = self._waiting.popleft()
            self._queue_changed()
            if job.channel.cancelled.is_set():
                continue
            if job.deadline is not None and time.monotonic() >= job.deadline:
                job.channel.fail_nowait(errors.DeadlineExceeded("the deadline passed while the request was queued"))
                continue
            self._running = job
            try:
                await loop.run_in_executor(self._executor, self._run, job)
            finally:
                self._running = None

    def _run(self, job: _Job) -> None:
        """Worker thread: one generation from start to its last event."""
        model_id = job.backend.model_id
        started = time.monotonic()
        self._metrics.observe_queue(model_id, started - job.enqueued)
        self.stats.generations_started += 1
        try:
            self._generate(job)
        except _Stop as stop:
            self.stats.generations_stopped += 1
            _LOGGER.info("generation stopped: %s", stop.error.message)
            self._close(job, stop.error)
        except errors.ServingError as error:
            self._close(job, error)
        except Exception as error:  # a model failure fails this request, not the worker
            _LOGGER.exception("generation failed on %s", model_id)
            self._close(job, error)
        else:
            self.stats.generations_completed += 1
            self._close(job, None)
        finally:
            self._metrics.observe_compute(model_id, time.monotonic() - started)

    @staticmethod
    def _close(job: _Job, error: BaseException | None) -> None:
        with contextlib.suppress(_Stop):  # nobody left to tell
            job.channel.close(error)

    def _generate(self, job: _Job) -> None:
        params, backend, emit = job.params, job.backend, job.channel.put
        spec = SPECS[job.fmt]
        job.check()
        emit(Header(
            mime_type=spec.mime_type, container=spec.container, codec=spec.codec, width=params.width,
            height=params.height, fps=params.fps, num_frames=params.num_frames, seed=params.seed,
            model_id=backend.model_id,
        ))
        safety_checked = nsfw = False
        if job.safety_check and self.safety_checker is not None:
            nsfw = self.safety_checker.check(job.image)
            safety_checked = True
        emit(Progress(Stage.ENCODE_IMAGE, 0, 1))

        def on_step(done: int, total: int) -> None:
            self.stats.denoising_steps += 1
            emit(Progress(Stage.DENOISE, done, total))
            job.check()

        latents = backend.denoise(job.image, params, on_step)
        job.check()
        sender = _ByteSender(emit)
        encoder = StreamingVideoEncoder(job.fmt, params.width, params.height, params.fps)
        try:
            done = 0
            emit(Progress(Stage.DECODE, 0, params.num_frames))
            with contextlib.closing(backend.decode(latents, params)) as chunks:
                for frames in chunks:
                    done += len(frames)
                    emit(Progress(Stage.DECODE, done, params.num_frames))
                    for frame in frames:
                        # Per frame, so each frame's bytes leave as soon as the muxer writes them.
                        sender.send(encoder.write(frame))
                    emit(Progress(Stage.ENCODE_VIDEO, done, params.num_frames))
                    job.check()
            sender.send(encoder.close())
        finally:
            encoder.abort()
        pixels = params.width * params.height * params.num_frames
        rate = self.limits.usd_per_output_pixel
        emit(Result(
            total_bytes=sender.offset, sha256=sender.digest.digest(), seed=params.seed,
            safety_checked=safety_checked, nsfw=nsfw,
            usage=Usage(output_pixels=pixels, usd_per_output_pixel=rate, price_usd=pixels * rate),
        ))

    async def warm_up(self) -> None:
        """Run one minimal generation per model (and the safety checker) so the first client pays no set-up."""
        blank = Image.new("RGB", (MIN_SIDE, MIN_SIDE), (127, 127, 127))
        params = GenerationParams(
            width=MIN_SIDE, height=MIN_SIDE, num_frames=2, fps=6, motion_bucket_id=127, noise_aug_strength=0.02,
            num_inference_steps=1, seed=0, decode_chunk_size=2, min_guidance_scale=1.0, max_guidance_scale=3.0,
        )
        loop = asyncio.get_running_loop()
        for backend in self._backends.values():
            await loop.run_in_executor(self._executor, _warm_up_one, backend, blank, params)
        if self.safety_checker is not None:
            await loop.run_in_executor(self._executor, self.safety_checker.check, blank)


def _warm_up_one(backend: VideoBackend, image: Image.Image, params: GenerationParams) -> None:
    latents = backend.denoise(image, params, lambda done, total: None)
    encoder = StreamingVideoEncoder(VideoFormat.MP4_H264, params.width, params.height, params.fps)
    for frames in backend.decode(latents, params):
        encoder.write(frames)
    encoder.close()


class _ByteSender:
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
