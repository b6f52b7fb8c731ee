"""The per-request record: the interceptor opens it, servicers annotate it, and it becomes one log line."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class CallRecord:
    """What one RPC did; written as a single structured log line when it ends."""

    method: str
    request_id: str
    peer: str = ""
    started: float = field(default_factory=time.perf_counter)
    fields: dict[str, Any] = field(default_factory=dict)

    def annotate(self, **fields: Any) -> None:
        """Add fields (model, sizes, durations...) to this call's log line."""
        self.fields.update(fields)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


_CURRENT: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("imagewire_call", default=None)


class _HasDeadline(Protocol):
    def time_remaining(self) -> float | None: ...


def deadline_of(context: _HasDeadline) -> float | None:
    """The caller's deadline (a servicer context's time remaining) as a time.monotonic() instant."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


# A caller's deadline travels as grpc-timeout and the server counts it from when it read the call, so the server's copy
# ends a little after the caller's. At the caller's own deadline its library cancels the call (RST_STREAM, exactly as
# an explicit cancel), which can reach the server before the server's copy has passed: a cancellation this close to
# the deadline is the deadline.
DEADLINE_SLACK_S = 0.5


def deadline_passed(remaining: float | None) -> bool:
    """Whether a call that ended with ``remaining`` seconds left before its deadline (None: none) ended by it."""
    return remaining is not None and remaining <= DEADLINE_SLACK_S


def current_call() -> CallRecord:
    """The record of the RPC being served; a detached one outside any RPC (so callers need no checks)."""
    record = _CURRENT.get()
    return record if record is not None else CallRecord(method="", request_id="")


def bind(record: CallRecord) -> None:
    """Make ``record`` the current call. grpc.aio serves each RPC in its own task, whose context copy ends with
    it, so there is nothing to undo (and a streaming handler may be finalised from another context)."""
    _CURRENT.set(record)
