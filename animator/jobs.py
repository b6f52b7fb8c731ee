"""A video job: one generation, everything it has produced so far, and the calls watching it.

The generation (on the device thread) never depends on a reader: it :meth:`Job.post`\\ s its events, which land in
the job's log on the event loop, and it stops only when the job is asked to stop (:meth:`Job.request_stop`:
CancelAnimation, no watcher for the detach grace period, shutdown, memory). Readers (:mod:`animator.watch`) keep
their own cursor into the log, so a slow or absent reader never pauses the generation and any number of them see
the same bytes. The log keeps every event but the older previews, so it is bounded by the video's size; the
:class:`~animator.job_table.JobTable` bounds all jobs together.

Everything here runs on the event loop except :meth:`Job.check` and :meth:`Job.post`, which the worker calls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from animator.backend import VideoBackend
from animator.events import Chunk, Event, Header, JobState, JobStatus, Preview, Progress, Result
from animator.params import JobSpec
from imagewire_serving import errors
from imagewire_serving.provenance import Provenance

# What a job costs in memory besides its bytes, counted against the retention budget: the job and its spec, and
# each event kept in its log. Estimates, so that jobs without video (cancelled early) still take their share.
JOB_OVERHEAD_BYTES = 4096
EVENT_OVERHEAD_BYTES = 256


class Stop(Exception):
    """Raised inside the worker (also from the pipeline's step callback) to abandon a generation."""

    def __init__(self, error: errors.ServingError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class JobHooks:
    """What a job tells its owners: it grew by some bytes, it finished, or nobody watched it for its grace period
    (the engine then stops it, taking it off the queue if it is still waiting)."""

    grew: Callable[[Job, int], None]
    finished: Callable[[Job], None]
    abandoned: Callable[[Job, errors.ServingError], None]


class Job:
    """One generation and its retained output: state, progress, the latest preview, the header, the bytes so far,
    the result or error, and how many calls watch it."""

    def __init__(self, job_id: str, spec: JobSpec, backend: VideoBackend, image: Image.Image, hooks: JobHooks,
                 provenance: Provenance) -> None:
        self.id = job_id
        self.spec = spec
        self.backend = backend
        # What its bytes depend on besides the spec: every stream of it says the key first, the result all of it.
        self.provenance = provenance
        self.image: Image.Image | None = image  # dropped once the generation ends
        self.state = JobState.QUEUED
        self.queue_position = 0
        self.error: BaseException | None = None
        # Every event in order; an older preview is replaced by None when a newer one arrives.
        self.log: list[Event | None] = []
        self.chunks: list[Chunk] = []
        self.available_bytes = 0
        self.progress: Progress | None = None
        self.preview: Preview | None = None
        self.header: Header | None = None
        self.result: Result | None = None
        self.watchers = 0
        self.footprint = JOB_OVERHEAD_BYTES
        self.enqueued = time.monotonic()
        self.finished_at: float | None = None
        self._hooks = hooks
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._stop_error: errors.ServingError = errors.Cancelled("the job was cancelled")
        self._preview_index = -1
        self._updated = asyncio.Event()
        self._grace: asyncio.TimerHandle | None = None

    # The device thread.

    def check(self) -> None:
        """Raise Stop once the job has been asked to stop."""
        if self._stop.is_set():
            raise Stop(self._stop_error)

    def post(self, event: Event) -> None:
        """Add an event to the job (it is appended on the event loop); raises Stop once the job is to stop."""
        self.check()
        try:
            self._loop.call_soon_threadsafe(self.append, event)
        except RuntimeError:  # the event loop is closed: the server is gone
            raise Stop(errors.Unavailable("the server is shutting down")) from None

    # The event loop.

    @property
    def updated(self) -> asyncio.Event:
        """Set at the next change (an event appended, the job finished); a new one after each change."""
        return self._updated

    def append(self, event: Event) -> None:
        grown = EVENT_OVERHEAD_BYTES
        if isinstance(event, Chunk):
            self.chunks.append(event)
            self.available_bytes += len(event.data)
            grown += len(event.data)
        elif isinstance(event, Progress):
            self.progress = event
        elif isinstance(event, Header):
            self.header = event
        elif isinstance(event, Result):
            self.result = event
        elif isinstance(event, Preview):
            if self.preview is not None:  # only the latest preview is worth its memory
                self.log[self._preview_index] = None
                grown -= EVENT_OVERHEAD_BYTES + len(self.preview.image)
            self.preview, self._preview_index = event, len(self.log)
            grown += len(event.image)
        self.log.append(event)
        self.footprint += grown
        self._notify()
        self._hooks.grew(self, grown)

    def start(self) -> None:
        """The worker took the job."""
        self.state, self.queue_position = JobState.RUNNING, 0

    def finish(self, error: BaseException | None) -> None:
        """The generation ended: with its result (error None), stopped, or failed."""
        if error is None:
            self.state = JobState.SUCCEEDED
        else:
            self.state = JobState.CANCELLED if isinstance(error, errors.Cancelled) else JobState.FAILED
        self.error, self.image, self.queue_position = error, None, 0
        self.finished_at = time.monotonic()
        self._cancel_grace()
        self._notify()
        self._hooks.finished(self)

    def request_stop(self, error: errors.ServingError) -> None:
        """Ask the running generation to stop at its next step, ending with ``error``."""
        if not self.state.finished and not self._stop.is_set():
            self._stop_error = error
            self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """Whether the job has been asked to stop (it stops at its next step or decoded chunk)."""
        return self._stop.is_set()

    def attach(self) -> None:
        """A call started watching."""
        self.watchers += 1
        self._cancel_grace()

    def detach(self, why: str = "left") -> None:
        """A call stopped watching (``why``: how it ended, for the job's error and log). The last one leaving starts
        the grace period (none: stop at the next step)."""
        self.watchers -= 1
        if self.watchers or self.state.finished:
            return
        grace = self.spec.detach_grace_seconds
        if grace <= 0:
            self._hooks.abandoned(self, errors.Cancelled(f"the last call watching the job {why}, with no grace"))
        else:
            self._grace = self._loop.call_later(grace, self._abandon)

    def after_detach(self) -> str:
        """What becomes of the job when one of its watchers stops watching (said to that watcher)."""
        if self.watchers > 1:
            return "it goes on for the other calls watching it"
        grace = self.spec.detach_grace_seconds
        if grace <= 0:
            return "with no detach grace, the job stops at its next step"
        return f"it goes on for {grace:g} s (its detach grace) unless a call watches it again"

    def status(self, *, created: bool) -> JobStatus:
        """The job as one call sees it now."""
        return JobStatus(self.id, self.state, self.queue_position, created, self.available_bytes, self.provenance.key)

    def _abandon(self) -> None:
        self._grace = None
        if not self.watchers and not self.state.finished:
            grace = self.spec.detach_grace_seconds
            self._hooks.abandoned(self, errors.Cancelled(f"no call watched the job for {grace:g} s"))

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _notify(self) -> None:
        updated, self._updated = self._updated, asyncio.Event()
        updated.set()
