"""Reading a job: what one Animate or WatchAnimation stream sends.

A reader joining a job gets, in order: the job's status; a snapshot of where the job is (its latest preview, the
header once there is one, its latest progress, the video's bytes from the requested offset, and the result if the
job has finished); then every event the job appends after that moment, to the end; then the job's error raised, if
it ended with one. A reader that joins a job at its start (the Animate call that creates it) sees every event in
the order it happened.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import time
from collections.abc import AsyncGenerator

from animator.events import Chunk, Event, JobStatus
from animator.jobs import Job
from imagewire_serving import errors
from imagewire_serving.calls import deadline_passed


def snapshot(job: Job, offset: int) -> list[Event]:
    """Where ``job`` is now, for a reader that has its first ``offset`` bytes; OutOfRange past the bytes so far."""
    if offset > job.available_bytes:
        raise errors.OutOfRange(f"offset {offset} is past the {job.available_bytes} bytes job "
                                f"{errors.shown(job.id)} has produced so far")
    events: list[Event] = [event for event in (job.preview, job.header, job.progress) if event is not None]
    # The chunk holding byte `offset`, then every later one; the first is cut at the offset.
    first = bisect.bisect_right(job.chunks, offset, key=lambda chunk: chunk.offset) - 1
    for chunk in job.chunks[max(first, 0):]:
        if chunk.offset < offset:
            chunk = Chunk(chunk.data[offset - chunk.offset:], offset)
        if chunk.data:
            events.append(chunk)
    if job.result is not None:
        events.append(job.result)
    return events


async def follow(job: Job, status: JobStatus, *, offset: int = 0,
                 deadline: float | None = None) -> AsyncGenerator[Event, None]:
    """Watch ``job`` from byte ``offset``: ``status`` first, then the snapshot, then live events to the end.

    The job counts this reader as a watcher until the iteration ends, however it ends. ``deadline`` is a
    time.monotonic() instant; past it, DeadlineExceeded (the job itself goes on).
    """
    replay = snapshot(job, offset)
    cursor = len(job.log)
    job.attach()
    try:
        yield status
        for event in replay:
            yield event
        while True:
            while cursor < len(job.log):
                logged = job.log[cursor]
                cursor += 1
                if logged is not None:
                    yield logged
            if job.state.finished:
                if job.error is not None:
                    raise copy.copy(job.error)  # a copy: each reader's traceback is its own
                return
            await _changed(job, deadline)
    finally:
        # grpc may cancel the handler at the deadline before _changed sees it pass: the clock tells which it was.
        expired = deadline_passed(None if deadline is None else deadline - time.monotonic())
        job.detach("passed its deadline" if expired else "left")


async def _changed(job: Job, deadline: float | None) -> None:
    if deadline is None:
        await job.updated.wait()
        return
    try:
        await asyncio.wait_for(job.updated.wait(), max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        raise errors.DeadlineExceeded(f"the deadline passed while the job was running; {job.after_detach()}") from None
