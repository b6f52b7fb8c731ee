"""Holding a real model call at a gate, and waiting for conditions, so tests wait on events instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

GATE_TIMEOUT_S = 30.0


class Gate:
    """Wraps a real backend method (it still runs): records each call's arguments, signals when the device worker
    enters it, and holds the worker there while the gate is closed (but for the calls let through)."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method
        self._changed = threading.Condition()
        self._open = True
        self._passes = 0
        self.entered = threading.Event()
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._changed:
            self.calls.append(args)
            if self._passes and not self._open:
                self._passes -= 1
            else:
                self.entered.set()
                if not self._changed.wait_for(self._may_pass, GATE_TIMEOUT_S):
                    raise RuntimeError("the test never opened the gate")
                if not self._open:
                    self._passes -= 1
        return self._method(*args, **kwargs)

    def _may_pass(self) -> bool:
        return self._open or self._passes > 0

    def close(self) -> None:
        """Hold the next caller (and forget that an earlier one entered)."""
        with self._changed:
            self.entered.clear()
            self._open = False

    def release(self) -> None:
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def let_through(self, calls: int = 1) -> None:
        """Let that many more calls pass the closed gate; ``entered`` is set again by the next call held."""
        with self._changed:
            self.entered.clear()
            self._passes += calls
            self._changed.notify_all()

    async def wait_entered(self) -> None:
        """Wait until the device worker is inside the wrapped method (held there while the gate is closed)."""
        assert await asyncio.to_thread(self.entered.wait, GATE_TIMEOUT_S), "the worker never reached the model"


@contextlib.contextmanager
def gate(owner: object, method: str = "generate", *, closed: bool = True) -> Iterator[Gate]:
    """Install a Gate on ``owner.method`` for the block; it is always reopened and removed afterwards."""
    own = method in vars(owner)
    original = getattr(owner, method)
    installed = Gate(original)
    if closed:
        installed.close()
    setattr(owner, method, installed)
    try:
        yield installed
    finally:
        installed.release()
        if own:
            setattr(owner, method, original)
        else:
            delattr(owner, method)


async def wait_until(condition: Callable[[], bool], timeout: float = GATE_TIMEOUT_S) -> None:
    """Poll a cheap in-process condition until it holds (an event loop turn at a time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def poll_until(condition: Callable[[], bool], timeout: float = GATE_TIMEOUT_S, what: str = "condition") -> None:
    """The blocking :func:`wait_until`, for tests that drive subprocesses from threads."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout:g}s"
        time.sleep(0.01)
