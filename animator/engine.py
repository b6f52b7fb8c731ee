"""The animate engine: validation, one device worker with a bounded queue, streaming events, cancellation.

Pure typed Python: no grpc, no protobuf. Callers pass an :class:`AnimateInput` to :meth:`AnimateEngine.animate`
and iterate the events it yields: :class:`Progress` repeatedly, a :class:`Header` before the first
:class:`Chunk` of video bytes, and one :class:`Result` last. Errors are the domain errors of
:mod:`imagewire_serving.errors`.

One generation runs at a time on the device, in the worker thread (:mod:`animator.generation`). Its events cross
to the event loop through a per-request :class:`~animator.channel.EventChannel`. A reader that goes away
(cancelled call) or a deadline that passes stops the generation at the next denoising step or decoded chunk, and
the worker takes the next request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from PIL import Image

from animator import generation
from animator.backend import VideoBackend
from animator.channel import End, EventChannel, Stop
from animator.events import Chunk, Event, Progress, Stage
from animator.generation import Job
from animator.limits import MIN_SIDE, EngineLimits
from animator.params import AnimateInput, GenerationParams, request_fields, resolve
from animator.safety import SafetyChecker
from animator.video import VideoFormat
from imagewire_serving import errors
from imagewire_serving.calls import current_call
from imagewire_serving.engine import DeviceEngine
from imagewire_serving.engine import ModelCard as BaseCard
from imagewire_serving.errors import FieldViolation
from imagewire_serving.images import decode_image
from imagewire_serving.memory import releasing_memory
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

# What a caller whose video ran out of device memory can ask for instead.
MEMORY_HINT = "ask for a smaller width and height, fewer num_frames or a smaller decode_chunk_size"


@dataclass(frozen=True)
class ModelCard(BaseCard):
    """What ListModels says of one loaded video model (the names of the contract's ModelInfo fields)."""

    default_width: int
    default_height: int
    default_num_frames: int
    default_fps: int
    default_num_inference_steps: int
    max_pixels_per_frame: int
    max_num_frames: int
    max_num_inference_steps: int
    safety_checker: bool
    usd_per_output_pixel: float


class AnimateEngine(DeviceEngine[VideoBackend, ModelCard]):
    """Generates videos with one or more loaded models that share one device worker thread.

    Requests wait in a queue of at most ``limits.max_queue``; past that, :meth:`animate` raises Overloaded at once.
    """

    def __init__(
        self,
        backends: Sequence[VideoBackend],
        limits: EngineLimits,
        metrics: Metrics,
        *,
        safety_checker: SafetyChecker | None = None,
    ) -> None:
        super().__init__(backends, device_thread="animate-device")
        self.limits = limits
        self.safety_checker = safety_checker
        self._metrics = metrics
        self._waiting: collections.deque[Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._running: Job | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="animate-worker")

    async def _stop(self) -> None:
        """Queued requests fail with Unavailable; the running one stops at its next step."""
        running = self._running  # read first: cancelling the worker task clears it
        if running is not None:
            running.channel.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._waiting:
            self._waiting.popleft().channel.fail_nowait(errors.Unavailable("the server is shutting down"))

    async def animate(self, request: AnimateInput, *, deadline: float | None = None) -> AsyncIterator[Event]:
        """Generate one video, yielding its events as they happen.

        ``deadline`` is a time.monotonic() instant; past it the generation stops and DeadlineExceeded is raised.
        Leaving the iteration early (closing the generator, a cancelled task) stops the generation.
        """
        submitted = time.monotonic()
        backend = self.model(request.model_id)
        params, fmt, image = await self._validate(request, backend)
        job = self._submit(Job(backend, image, params, fmt, request.safety_check, deadline,
                               EventChannel(asyncio.get_running_loop(), self.limits.max_pending_bytes)))
        first_byte = True
        try:
            while True:
                item = await job.channel.get()
                if isinstance(item, End):
                    if item.error is not None:
                        raise item.error
                    return
                if isinstance(item, Chunk):
                    if first_byte:
                        first_byte = False
                        self._observe_first_byte(backend.model_id, time.monotonic() - submitted)
                    self._metrics.streamed_bytes.labels(backend.model_id).inc(len(item.data))
                yield item
        finally:
            job.channel.cancel()  # a no-op once the generation finished; stops it when the caller left early
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
                self._queue_changed()

    async def _validate(
        self, request: AnimateInput, backend: VideoBackend
    ) -> tuple[GenerationParams, VideoFormat, Image.Image]:
        """Resolve the parameters and decode the image off the event loop, naming every bad field at once."""
        violations: list[FieldViolation] = []
        resolved = image = None
        try:
            resolved = resolve(request, backend.defaults, self.limits)
        except errors.InvalidArgument as error:
            violations += error.violations
        try:
            image = await asyncio.to_thread(decode_image, request.image, self.limits.image)
        except errors.InvalidArgument as error:
            violations[:0] = error.violations
        errors.collect(violations)
        assert resolved is not None and image is not None
        return (*resolved, image)

    def _observe_first_byte(self, model_id: str, seconds: float) -> None:
        self._metrics.first_byte.labels(model_id).observe(seconds)
        current_call().annotate(first_byte_ms=round(seconds * 1000, 3))

    def _submit(self, job: Job) -> Job:
        if len(self._waiting) >= self.limits.max_queue:
            raise errors.Overloaded(f"the generation queue is full ({self.limits.max_queue} waiting); retry later")
        self._waiting.append(job)
        self._queue_changed()
        self._arrived.set()
        return job

    def _queue_changed(self) -> None:
        """Tell every waiting request its position (1 = next) and update the queue-depth gauge."""
        total = len(self._waiting)
        for position, job in enumerate(self._waiting, start=1):
            job.channel.put_nowait(Progress(Stage.QUEUED, position, total))
        for model_id in self._models:
            waiting = sum(1 for job in self._waiting if job.backend.model_id == model_id)
            self._metrics.queue_depth.labels(model_id).set(waiting)

    async def _work(self) -> None:
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
                await self.run_on_device(self._run, job)
            finally:
                self._running = None

    def _run(self, job: Job) -> None:
        """Worker thread: one generation from start to its last event."""
        model_id = job.backend.model_id
        started = time.monotonic()
        self._metrics.queue_duration.labels(model_id).observe(started - job.enqueued)
        self.stats.runs_started += 1
        error: BaseException | None = None
        try:
            run = releasing_memory(generation.generate, job.backend.device, MEMORY_HINT)
            run(job, self.safety_checker, self.limits.usd_per_output_pixel, self.stats)
        except Stop as stop:
            self.stats.runs_stopped += 1
            _LOGGER.info("generation stopped: %s", stop.error.message)
            error = stop.error
        except errors.ServingError as failure:
            self.stats.runs_failed += 1
            error = failure
        except Exception as failure:  # a model failure fails this request, not the worker
            _LOGGER.exception("generation failed on %s", model_id)
            self.stats.runs_failed += 1
            error = failure
        else:
            self.stats.runs_completed += 1
            self.stats.requests_completed += 1
        finally:
            self._metrics.compute_duration.labels(model_id).observe(time.monotonic() - started)
        job.channel.close(error)

    async def warm_up(self) -> None:
        """One minimal generation per model (and the safety checker) so the first client pays no set-up."""
        await super().warm_up()
        if self.safety_checker is not None:
            await self.run_on_device(self.safety_checker.check, warm_up_image())

    def _warm_up_model(self, backend: VideoBackend) -> None:
        generation.warm_up(backend, warm_up_image(), warm_up_params(backend))

    def _card(self, backend: VideoBackend) -> ModelCard:
        limits, defaults = self.limits, backend.defaults
        return ModelCard(
            **self._card_basics(backend, request_fields(defaults, limits).values()), default_width=defaults.width,
            default_height=defaults.height, default_num_frames=defaults.num_frames, default_fps=defaults.fps,
            default_num_inference_steps=defaults.num_inference_steps,
            max_pixels_per_frame=limits.max_pixels_per_frame, max_num_frames=limits.max_num_frames,
            max_num_inference_steps=limits.max_num_inference_steps, safety_checker=self.safety_checker is not None,
            usd_per_output_pixel=limits.usd_per_output_pixel,
        )


def warm_up_params(backend: VideoBackend) -> GenerationParams:
    """The warm-up's request. On a GPU the model's default size, frame count and decode chunk (one step: each
    step takes the same memory), so a card too small for the default request fails at start-up rather than on
    the first caller; on the CPU the smallest generation, which pays for the same lazy initialisation."""
    d = backend.defaults
    if backend.device.type == "cuda":
        return GenerationParams(
            width=d.width, height=d.height, num_frames=d.num_frames, fps=d.fps, motion_bucket_id=d.motion_bucket_id,
            noise_aug_strength=d.noise_aug_strength, num_inference_steps=1, seed=0,
            decode_chunk_size=min(d.decode_chunk_size, d.num_frames), min_guidance_scale=d.min_guidance_scale,
            max_guidance_scale=d.max_guidance_scale)
    return GenerationParams(
        width=MIN_SIDE, height=MIN_SIDE, num_frames=2, fps=6, motion_bucket_id=127, noise_aug_strength=0.02,
        num_inference_steps=1, seed=0, decode_chunk_size=2, min_guidance_scale=1.0, max_guidance_scale=3.0,
    )


def warm_up_image() -> Image.Image:
    """The warm-up's conditioning image."""
    return Image.new("RGB", (MIN_SIDE, MIN_SIDE), (127, 127, 127))
