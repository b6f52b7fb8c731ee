"""The animate engine: video jobs, one device worker with a bounded queue, and the streams that read the jobs.

Pure typed Python: no grpc, no protobuf. Every generation is a :class:`~animator.jobs.Job` in the engine's
:class:`~animator.job_table.JobTable`. :meth:`AnimateEngine.animate` starts one (or attaches to the job its id
names), :meth:`AnimateEngine.watch` follows one from a byte offset, :meth:`AnimateEngine.cancel` stops one; each
stream is a reader of its job (:mod:`animator.watch`) and yields :class:`JobStatus` first, then
:class:`Progress` (and :class:`Preview` while denoising), a :class:`Header` before the first :class:`Chunk` of
video bytes, and one :class:`Result` last. Errors are the domain errors of :mod:`imagewire_serving.errors`.

One generation runs at a time on the device, in the worker thread (:mod:`animator.generation`), writing into its
job. A job goes on when its callers leave: it stops at the next step when cancelled, or when nobody has watched
it for its detach grace period.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from PIL import Image

from animator import generation
from animator.backend import VideoBackend
from animator.events import Chunk, Event, JobState, JobStatus, Progress, Stage
from animator.job_table import JobTable
from animator.jobs import Job, JobHooks, Stop
from animator.limits import MIN_SIDE, EngineLimits
from animator.params import (
    AnimateInput,
    GenerationParams,
    JobSpec,
    job_id_violation,
    request_fields,
    resolve,
    unservable,
    warm_up_params,
)
from animator.safety import SafetyChecker
from animator.watch import follow
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
    max_segments: int
    max_interpolate: int


class AnimateEngine(DeviceEngine[VideoBackend, ModelCard]):
    """Generates videos as jobs with one or more loaded models that share one device worker thread.

    Jobs wait in a queue of at most ``limits.max_queue``; past that, :meth:`animate` raises Overloaded at once.
    """

    # imagewire: this server (its encoder settings, its decode); transformers: the image encoder of SVD, the text
    # encoders of LTX-Video and Wan; av: the video encoder.
    libraries = ("imagewire", "torch", "diffusers", "transformers", "pillow", "av")

    def __init__(
        self,
        backends: Sequence[VideoBackend],
        limits: EngineLimits,
        metrics: Metrics,
        *,
        safety_checker: SafetyChecker | None = None,
    ) -> None:
        for backend in backends:
            problem = unservable(backend.accepts, limits)
            if problem is not None:
                raise ValueError(f"{problem}; it cannot serve {backend.model_id}")
        super().__init__(backends, device_thread="animate-device")
        self.limits = limits
        self.safety_checker = safety_checker
        self.jobs = JobTable(limits, metrics)
        self._metrics = metrics
        self._hooks = JobHooks(grew=self.jobs.grew, finished=self.jobs.finished, abandoned=self._stop_job)
        self._waiting: collections.deque[Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._running: Job | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="animate-worker")
        self.jobs.start()

    async def _stop(self) -> None:
        """Queued jobs fail with Unavailable; the running one stops at its next step."""
        shutting_down = errors.Unavailable("the server is shutting down")
        running = self._running  # read first: cancelling the worker task clears it
        if running is not None:
            running.request_stop(shutting_down)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if running is not None and not running.state.finished:
            running.finish(shutting_down)
        while self._waiting:
            self._waiting.popleft().finish(shutting_down)
        await self.jobs.close()

    async def animate(self, request: AnimateInput, *, deadline: float | None = None) -> AsyncGenerator[Event, None]:
        """Start a job (or attach to the existing job ``request.job_id`` names) and yield its events.

        ``deadline`` is a time.monotonic() instant; past it this stream raises DeadlineExceeded. Leaving the
        iteration (closing the generator, a cancelled task, the deadline) does not stop the job: it goes on for
        its detach grace period, waiting for a watcher.
        """
        backend = self.model(request.model_id)
        spec, image = await self._validate(request, backend)
        job, created = self._job_for(request.job_id, spec, backend, image)
        current_call().annotate(job_id=job.id, job_created=created)
        async with contextlib.aclosing(self._read(job, job.status(created=created), 0, deadline)) as events:
            async for event in events:
                yield event

    async def watch(self, job_id: str, offset: int = 0, *,
                    deadline: float | None = None) -> AsyncGenerator[Event, None]:
        """Follow an existing job from byte ``offset``: NotFound for an unknown job, OutOfRange for an offset past
        the bytes it has produced."""
        job = self._job(job_id)
        current_call().annotate(job_id=job.id, offset=offset)
        async with contextlib.aclosing(self._read(job, job.status(created=False), offset, deadline)) as events:
            first = await anext(events)  # raises OutOfRange before the call counts as a resume
            self._metrics.job_resumes.labels("watch").inc()
            yield first
            async for event in events:
                yield event

    async def cancel(self, job_id: str, *, deadline: float | None = None) -> JobStatus:
        """Stop a job at its next step (NotFound for an unknown job); returns its status once it has stopped."""
        job = self._job(job_id)
        current_call().annotate(job_id=job.id)
        self._stop_job(job, errors.Cancelled(f"job {errors.shown(job.id)} was cancelled"))
        while not job.state.finished:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                await asyncio.wait_for(job.updated.wait(), remaining)
            except TimeoutError:
                raise errors.DeadlineExceeded("the deadline passed before the job stopped") from None
        return job.status(created=False)

    def _job(self, job_id: str) -> Job:
        violation = job_id_violation(job_id, required=True)
        errors.collect([violation] if violation else [])
        return self.jobs.get(job_id)

    def _job_for(self, job_id: str, spec: JobSpec, backend: VideoBackend, image: Image.Image) -> tuple[Job, bool]:
        """The job this request names, if it exists and may be attached to; else a new one, queued."""
        existing = self.jobs.find(job_id) if job_id else None
        if existing is not None:
            differences = existing.spec.differences(spec)
            if differences:
                raise errors.FailedPrecondition(
                    f"job {errors.shown(job_id)} exists with different parameters: {', '.join(differences)}")
            # A job that ended without its video is started afresh: there is nothing a retry would pay twice for.
            if existing.state not in (JobState.FAILED, JobState.CANCELLED):
                self._metrics.job_resumes.labels("animate").inc()
                return existing, False
        job = Job(job_id or uuid.uuid4().hex, spec, backend, image, self._hooks, self.provenance[backend.model_id])
        self._submit(job)
        self.jobs.add(job)
        self._metrics.jobs_created.labels(backend.model_id).inc()
        return job, True

    async def _read(self, job: Job, status: JobStatus, offset: int,
                    deadline: float | None) -> AsyncGenerator[Event, None]:
        """One stream of a job, with its metrics: time to the first byte (for the call that created the job) and
        bytes streamed."""
        model_id = job.backend.model_id
        first_byte = status.created
        async with contextlib.aclosing(follow(job, status, offset=offset, deadline=deadline)) as events:
            async for event in events:
                if isinstance(event, Chunk):
                    if first_byte:
                        first_byte = False
                        self._observe_first_byte(model_id, time.monotonic() - job.enqueued)
                    self._metrics.streamed_bytes.labels(model_id).inc(len(event.data))
                yield event

    async def _validate(self, request: AnimateInput, backend: VideoBackend) -> tuple[JobSpec, Image.Image]:
        """Resolve the parameters and decode the image off the event loop, naming every bad field at once."""
        violations: list[FieldViolation] = []
        spec = image = None
        try:
            spec = resolve(request, backend.model_id, backend.accepts, self.limits)
            violations += backend.violations(spec.params)
        except errors.InvalidArgument as error:
            violations += error.violations
        try:
            image = await asyncio.to_thread(decode_image, request.image, self.limits.image)
        except errors.InvalidArgument as error:
            violations[:0] = error.violations
        errors.collect(violations)
        assert spec is not None and image is not None
        return spec, image

    def _observe_first_byte(self, model_id: str, seconds: float) -> None:
        self._metrics.first_byte.labels(model_id).observe(seconds)
        current_call().annotate(first_byte_ms=round(seconds * 1000, 3))

    def _submit(self, job: Job) -> None:
        if len(self._waiting) >= self.limits.max_queue:
            raise errors.Overloaded(f"the generation queue is full ({self.limits.max_queue} waiting); retry later")
        self._waiting.append(job)
        self._queue_changed()
        self._arrived.set()

    def _stop_job(self, job: Job, error: errors.ServingError) -> None:
        """Stop a job: a waiting one ends at once, a running one at its next step."""
        if job in self._waiting:
            self._waiting.remove(job)
            job.finish(error)
            self._queue_changed()
        else:
            job.request_stop(error)

    def _queue_changed(self) -> None:
        """Tell every waiting job its position (1 = next) and update the queue-depth gauge."""
        total = len(self._waiting)
        for position, job in enumerate(self._waiting, start=1):
            if job.queue_position != position:
                job.queue_position = position
                job.append(Progress(Stage.QUEUED, position, total))
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
            job.start()
            self._running = job
            try:
                error = await self.run_on_device(self._run, job)
            finally:
                self._running = None
            job.finish(error)

    def _run(self, job: Job) -> BaseException | None:
        """Worker thread: one generation from start to its last event; returns the error it ended with, if any.

        The one place where a generation's failures are told apart (stopped, a client error, anything else)."""
        model_id = job.backend.model_id
        started = time.monotonic()
        self._metrics.queue_duration.labels(model_id).observe(started - job.enqueued)
        self.stats.runs_started += 1
        try:
            run = releasing_memory(generation.generate, job.backend.device, MEMORY_HINT)
            run(job, self.safety_checker, self.limits.usd_per_output_pixel, self.stats)
        except Stop as stop:
            self.stats.runs_stopped += 1
            _LOGGER.info("job %s stopped: %s", job.id, stop.error.message)
            return stop.error
        except errors.ServingError as failure:
            self.stats.runs_failed += 1
            return failure
        except Exception as failure:  # a model failure fails this job, not the worker
            _LOGGER.exception("job %s failed on %s", job.id, model_id)
            self.stats.runs_failed += 1
            return failure
        finally:
            self._metrics.compute_duration.labels(model_id).observe(time.monotonic() - started)
        self.stats.runs_completed += 1
        self.stats.requests_completed += 1
        return None

    async def warm_up(self) -> None:
        """One minimal generation per model (and the safety checker) so the first client pays no set-up."""
        await super().warm_up()
        if self.safety_checker is not None:
            await self.run_on_device(self.safety_checker.check, warm_up_image())

    def _warm_up_model(self, backend: VideoBackend) -> None:
        generation.warm_up(backend, warm_up_image(), warm_up_request(backend, self.limits))

    def _card(self, backend: VideoBackend) -> ModelCard:
        limits, fields = self.limits, request_fields(backend.accepts, self.limits)
        return ModelCard(
            **self._card_basics(backend, fields.values()), default_width=fields["width"].default,
            default_height=fields["height"].default, default_num_frames=fields["num_frames"].default,
            default_fps=fields["fps"].default, default_num_inference_steps=fields["num_inference_steps"].default,
            max_pixels_per_frame=limits.max_pixels_per_frame, max_num_frames=limits.max_num_frames,
            max_num_inference_steps=limits.max_num_inference_steps, safety_checker=self.safety_checker is not None,
            usd_per_output_pixel=limits.usd_per_output_pixel, max_segments=limits.max_segments,
            max_interpolate=limits.max_interpolate,
        )


def warm_up_request(backend: VideoBackend, limits: EngineLimits) -> GenerationParams:
    """The warm-up's request. On a GPU the model's default size, frame count and decode chunk (one step: each
    step takes the same memory), so a card too small for the default request fails at start-up rather than on
    the first caller; on the CPU the smallest generation, which pays for the same lazy initialisation."""
    return warm_up_params(backend.accepts, limits, default_shape=backend.device.type == "cuda")


def warm_up_image() -> Image.Image:
    """The warm-up's conditioning image."""
    return Image.new("RGB", (MIN_SIDE, MIN_SIDE), (127, 127, 127))
