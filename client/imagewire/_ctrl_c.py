"""Ctrl-C in the ``imagewire`` command: taken by a signal handler, never raised inside gRPC.

Python raises KeyboardInterrupt wherever the main thread happens to be, which may be inside gRPC's channel lock:
the lock's release then fails ("RuntimeError: cannot release un-acquired lock") and the command ends in a
traceback. While a command's calls run, the handler instead stops them from another thread: a download is
interrupted (it cancels the job it started, and raises :class:`imagewire.client.Interrupted` saying what became
of the job), other calls' channels are closed (the calls end CANCELLED), and the command reports the
interruption with exit status 130. With nothing to stop, the handler raises KeyboardInterrupt as Python would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType


class CtrlC:
    """The command's SIGINT handler and what it stops."""

    def __init__(self) -> None:
        self.pressed = False
        self._stops: list[Callable[[], None]] = []
        self._press = threading.Event()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if Ctrl-C is pressed; whether it was."""
        return self._press.wait(seconds)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handler in place for the block (only the main thread can take signals: elsewhere, nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[], None]) -> Iterator[None]:
        """Within the block, Ctrl-C calls ``stop`` (from another thread: it may take gRPC's locks)."""
        self._stops.append(stop)
        try:
            if self.pressed:  # pressed before the block began: stop at once
                stop()
            yield
        finally:
            self._stops.remove(stop)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True
        self._press.set()
        if not self._stops:
            raise KeyboardInterrupt
        for stop in list(self._stops):
            threading.Thread(target=stop, name="ctrl-c", daemon=True).start()


#: The command's one handler (signals are the process's).
CTRL_C = CtrlC()
