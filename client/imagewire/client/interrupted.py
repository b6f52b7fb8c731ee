"""What became of a job when the download writing it to a file was interrupted (Ctrl-C, or
:meth:`imagewire.client.AnimateClient.interrupt`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from imagewire.client.animate_types import JobStatus
from imagewire.client.errors import ImagewireError


class Outcome(enum.Enum):
    """What the interrupted download did about its job."""

    #: The download started the job and cancelled it (``Stop.status`` says its state: it may have ended first).
    CANCELLED = "cancelled"
    #: The job goes on: it was another call's (the download attached to it, or was a watch), so only this
    #: download stopped.
    DETACHED = "detached"
    #: No server ever answered and none knows the job: it never started.
    NEVER_STARTED = "never started"
    #: The cancel failed (``Stop.error``): the job may go on, until no call has watched it for its detach grace.
    NOT_CANCELLED = "not cancelled"


@dataclass(frozen=True)
class Stop:
    """The outcome, with the job's status after the cancel or the cancel's failure."""

    outcome: Outcome
    status: JobStatus | None = None
    error: ImagewireError | None = None


class Interrupted(KeyboardInterrupt):
    """A download to a file was interrupted: a KeyboardInterrupt that says what became of the job (``stop``) and
    of the file: ``written`` bytes of video had reached it, and it was ``kept`` (a watch continuing an existing
    file keeps it; otherwise the partial file is removed)."""

    def __init__(self, job_id: str, stop: Stop, *, written: int, kept: bool) -> None:
        super().__init__(f"job {job_id}: {stop.outcome.value}")
        self.job_id = job_id
        self.stop = stop
        self.written = written
        self.kept = kept
