"""The animator's jobs by id, and their retention: how long and within how much memory finished jobs stay readable.

Every job, running or finished, counts against ``--retention-bytes`` with its bytes, its latest preview and an
estimate of its bookkeeping (:data:`~animator.jobs.JOB_OVERHEAD_BYTES`). A finished job is dropped ``--retention``
seconds after it finished, or earlier, oldest first, when the jobs together would exceed the budget; a running
job whose own video outgrows the budget is stopped (RESOURCE_EXHAUSTED), since its bytes cannot be dropped. A
reader already streaming a dropped job finishes from its own reference; new calls get NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import logging
import time

from animator.jobs import Job
from animator.limits import EngineLimits
from imagewire_serving import errors
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

# How often expired jobs are swept when nothing else touches the table.
SWEEP_INTERVAL_S = 1.0


class JobTable:
    """Jobs by id; each finished job is kept until it expires or the memory budget needs its room."""

    def __init__(self, limits: EngineLimits, metrics: Metrics) -> None:
        self._retention = limits.retention
        self._budget = limits.retention_bytes
        self._metrics = metrics
        self._jobs: dict[str, Job] = {}
        # Finished jobs in the order they finished: the first is the next to go.
        self._finished: dict[str, Job] = {}
        self.retained_bytes = 0
        self._task: asyncio.Task[None] | None = None
        for state in ("active", "detached", "retained"):
            # The default binds each state; mypy cannot infer a lambda's default-argument type.
            metrics.jobs.labels(state).set_function(lambda state=state: self._count(state))  # type: ignore[misc]
        metrics.job_bytes.set_function(lambda: self.retained_bytes)

    def __len__(self) -> int:
        return len(self._jobs)

    def find(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        self.sweep()
        return self._jobs.get(job_id)

    def get(self, job_id: str) -> Job:
        """The job with this id, or NotFound saying which and why it may be gone."""
        job = self.find(job_id)
        if job is None:
            raise errors.NotFound(
                f"job {errors.shown(job_id)} is not on this server: it never was, it finished more than "
                f"{self._retention:g} s ago, it was evicted to make room, or it runs on another replica")
        return job

    def add(self, job: Job) -> None:
        """Hold a new job (replacing a finished one with the same id)."""
        old = self._jobs.get(job.id)
        if old is not None:
            self._evict(old, "replaced")
        self._jobs[job.id] = job
        self.retained_bytes += job.footprint
        self._enforce_budget()

    def grew(self, job: Job, delta: int) -> None:
        """A job's footprint changed by ``delta`` bytes."""
        if self._jobs.get(job.id) is job:
            self.retained_bytes += delta
            self._enforce_budget()

    def finished(self, job: Job) -> None:
        """A job ended: it is kept for the retention period, or less if the budget needs its room."""
        if self._jobs.get(job.id) is job:
            self._finished[job.id] = job
            self.sweep()
            self._enforce_budget()

    def sweep(self, now: float | None = None) -> None:
        """Drop the finished jobs older than the retention period."""
        now = time.monotonic() if now is None else now
        for job in list(self._finished.values()):
            if job.finished_at is not None and now - job.finished_at < self._retention:
                break
            self._evict(job, "expired")

    def start(self) -> None:
        """Sweep expired jobs in the background, so their memory goes even when no call comes."""
        self._task = asyncio.create_task(self._sweeper(), name="animate-job-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL_S, self._retention) or SWEEP_INTERVAL_S)
            self.sweep()

    def _enforce_budget(self) -> None:
        while self.retained_bytes > self._budget and self._finished:
            self._evict(next(iter(self._finished.values())), "budget")
        if self.retained_bytes > self._budget:
            running = max((job for job in self._jobs.values() if not job.state.finished),
                          key=lambda job: job.footprint, default=None)
            if running is not None:
                running.request_stop(errors.Overloaded(
                    f"the video outgrew the server's job memory ({self._budget} bytes, --retention-bytes)"))

    def _evict(self, job: Job, reason: str) -> None:
        del self._jobs[job.id]
        self._finished.pop(job.id, None)
        self.retained_bytes -= job.footprint
        self._metrics.job_evictions.labels(reason).inc()
        _LOGGER.debug("job %s evicted (%s)", job.id, reason)

    def _count(self, state: str) -> int:
        if state == "retained":
            return len(self._finished)
        watched = state == "active"
        return sum(1 for job in self._jobs.values() if not job.state.finished and bool(job.watchers) == watched)
