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
    enters it, and holds the worker there while the gate is closed."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        self.entered.set()
        if not self.open.wait(GATE_TIMEOUT_S):
            raise RuntimeError("the test never opened the gate")
        return self._method(*args, **kwargs)

    def close(self) -> None:
        """Hold the next caller (and forget that an earlier one entered)."""
        self.entered.clear()
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    async def wait_entered(self) -> None:
        """Wait until the device worker is inside the wrapped method."""
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
