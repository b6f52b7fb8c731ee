"""Downloading a job's video across dropped connections, free of I/O: which call comes next and when.

A download starts with one call (Animate, or WatchAnimation from an offset). When the connection drops
(:func:`dropped`: UNAVAILABLE, or a stream reset by a proxy), it goes on with WatchAnimation from the bytes the file
already has, after a growing pause, a bounded number of times, all within the first call's deadline. If the server
no longer knows the job (NOT_FOUND: it restarted, or the call reached another replica) and the download began with
Animate, it sends Animate again with the same job id and starts the file over. If the stream went on from a server
whose provenance differs from the one the file's bytes came from (:class:`~imagewire.client.video_sink.VideoSink`
raises :class:`ProvenanceChanged`), its bytes would not continue the file: it is watched again from byte 0. The
shells do the sleeping, the waiting for the channel and the calls.

Waiting for the channel is bounded by the time left, and a channel that does not connect within that wait ends
the download (the shells raise UNAVAILABLE naming the target): a first call refused because nothing listens is
not retried for minutes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from imagewire.client._core import PreparedCall
from imagewire.client.animate_types import AnimateEvent, JobStatus
from imagewire.client.errors import ImagewireError
from imagewire.client.video_sink import ProvenanceChanged, VideoSink

# The statuses of a connection that failed while the job may well go on.
DROPPED = frozenset({grpc.StatusCode.UNAVAILABLE})
# How gRPC reports a stream reset by the transport rather than ended by a server: when the replica behind a proxy
# dies mid-stream, the proxy (Envoy) resets the caller's stream (RST_STREAM), and grpc reports INTERNAL "Stream
# removed" or "Received RST_STREAM with error code 2". A server's own INTERNAL never carries these words.
_RESET = re.compile(r"^Stream removed|RST_STREAM")


def dropped(error: ImagewireError) -> bool:
    """Whether a failed call lost its connection while the job may well go on: UNAVAILABLE, or INTERNAL from a
    stream reset (see ``_RESET``); a real INTERNAL answered by a server is not."""
    if error.code in DROPPED:
        return True
    return error.code is grpc.StatusCode.INTERNAL and _RESET.search(error.message) is not None


@dataclass(frozen=True)
class Resume:
    """How a download survives dropped connections: at most ``attempts`` reconnections in all, the first after
    ``backoff_s``, each later one after twice the pause before it (at most ``max_backoff_s``), each waiting at
    most ``reconnect_timeout_s`` for the channel to connect. ``Resume(attempts=0)`` never resumes."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    reconnect_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {self.attempts}")
        for name in ("backoff_s", "max_backoff_s", "reconnect_timeout_s"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")

    def pause(self, attempt: int) -> float:
        """The pause before reconnection number ``attempt`` (0 first)."""
        return min(self.backoff_s * 2.0**attempt, self.max_backoff_s)


@dataclass(frozen=True)
class Attempt:
    """One call of a download: the RPC's name, the call, and the pause before it (0: send at once)."""

    method: str
    call: PreparedCall[AnimateEvent]
    pause: float = 0.0


# (offset, timeout) -> a WatchAnimation call; timeout -> an Animate call.
WatchCall = Callable[[int, float], PreparedCall[AnimateEvent]]
AnimateCall = Callable[[float], PreparedCall[AnimateEvent]]


class Download:
    """The calls of one download into ``sink``, from ``first`` on; see the module docstring.

    ``restart`` makes the Animate call again (None when the download began with WatchAnimation).
    """

    def __init__(self, first: Attempt, sink: VideoSink, resume: Resume, *, watch: WatchCall,
                 restart: AnimateCall | None = None) -> None:
        self.first = first
        # PreparedCall.request is a Message; an Animate call's is an AnimateRequest.
        self.job_id: str = first.call.request.job_id  # type: ignore[attr-defined]
        self.reconnect_timeout_s = resume.reconnect_timeout_s
        self.resumes = 0
        self._sink = sink
        self._resume = resume
        self._watch = watch
        self._restart = restart
        self._started = time.monotonic()
        self._deadline = self._started + first.call.options.timeout
        # Whether the job is this download's own (None until an Animate call's JobStatus says): a download that
        # attached to another caller's job only detaches when it is interrupted.
        self.created: bool | None = None
        # Whether any call of the download got a response: if none did, a server may never have seen the job.
        self.reached = False
        # Whether the channel has connected: until it has, all its waits share one reconnection wait.
        self.connected = False
        # Calls refused before answering (not resumes: nothing was lost), each sent again after a pause.
        self.refusals = 0

    def saw(self, event: AnimateEvent, attempt: Attempt) -> None:
        """Note an event of ``attempt``'s stream (before it is written)."""
        self.reached = self.connected = True
        if isinstance(event, JobStatus) and attempt.method == "Animate":
            self.created = event.created

    def ready_timeout(self) -> float:
        """How long to wait for the channel before the next attempt: the reconnection wait, within the time
        left; a download that has never reached a server has one reconnection wait from its start, in all."""
        now = time.monotonic()
        wait = self.reconnect_timeout_s if self.connected else self._started + self.reconnect_timeout_s - now
        return max(0.0, min(wait, self._deadline - now))

    def after(self, error: ImagewireError, attempt: Attempt) -> Attempt:
        """The next call after ``attempt`` failed with ``error``; raises ``error`` when the download is over."""
        remaining = self._deadline - time.monotonic()
        if dropped(error) and not error.responses_received:
            return self._again(error, attempt, remaining)
        lost_job = error.code is grpc.StatusCode.NOT_FOUND and attempt.method == "WatchAnimation" and self.resumes
        changed = isinstance(error, ProvenanceChanged)
        if not (dropped(error) or changed or (lost_job and self._restart is not None)):
            raise error
        if self.resumes >= self._resume.attempts:
            raise error
        # The server that answered is up: a change of provenance is followed at once.
        pause = 0.0 if changed else self._resume.pause(self.resumes)
        if remaining <= pause:
            raise error
        self.resumes += 1
        if changed:
            self._sink.restart()
            return Attempt("WatchAnimation", self._watch(0, remaining), pause)
        if lost_job and self._restart is not None:
            self._sink.restart()
            return Attempt("Animate", self._restart(remaining - pause), pause)
        return Attempt("WatchAnimation", self._watch(self._sink.written, remaining - pause), pause)

    def _again(self, error: ImagewireError, attempt: Attempt, remaining: float) -> Attempt:
        """``attempt`` sent again after it was refused before answering (a front door with no ready replica, a
        replica loading, nothing listening yet): for as long as the deadline allows, the pauses growing as a
        resume's do. A channel that never connects ends it (the shells' wait for the channel)."""
        pause = self._resume.pause(self.refusals)
        if remaining <= pause:
            raise error
        self.refusals += 1
        if attempt.method == "Animate" and self._restart is not None:  # the same job id: Animate is idempotent
            return Attempt("Animate", self._restart(remaining - pause), pause)
        return Attempt("WatchAnimation", self._watch(self._sink.written, remaining - pause), pause)
