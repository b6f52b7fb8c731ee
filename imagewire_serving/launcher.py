"""Run a server console script as a supervised child process: what the tests, the benchmarks and the demo use.

The child is started with ``--port 0``. The launcher learns the address it bound from the line it announces on
stdout (:mod:`imagewire_serving.announce`), waits for its ready line under one overall start-up deadline, and
always stops it (SIGTERM, then SIGKILL after a timeout) and reaps it. The child's stderr is kept as a bounded
tail, so a server that fails to start says why, not only its exit code::

    with launch([script("imagewire-captioner"), "--model", path], name="imagewire-captioner") as server:
        channel = grpc.insecure_channel(server.target)
        ...
        assert server.terminate() == 0
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TypeVar

from imagewire_serving.announce import is_ready_line, listening_address

# Set (to anything but "" or "0") to copy every supervised server's stderr to this process's stderr as it comes.
ECHO_ENV = "IMAGEWIRE_SERVER_LOGS"
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
TAIL_LINES = 40
# Threads that read the pipes end at EOF; this only bounds the wait when a grandchild still holds a pipe open.
_PUMP_JOIN_S = 5.0

_T = TypeVar("_T")


class ServerStartError(RuntimeError):
    """The server exited, or missed the start-up deadline, before it was ready; the message has its stderr tail."""


class ServerProcess:
    """One server child process: its ``command`` (the argv it runs), its announced ``target`` (``HOST:PORT``),
    its ready line and its stderr tail.

    Built by :meth:`start`; a context manager that stops the process on exit.
    """

    def __init__(self, name: str, command: list[str], process: subprocess.Popen[str], *, deadline: float,
                 tail_lines: int, echo: bool, on_stderr_line: Callable[[str], None] | None) -> None:
        self.name = name
        self.command = command
        self.process = process
        self.target = ""
        self.ready_line = ""
        self._deadline = deadline
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._tail_lock = threading.Lock()
        self._echo = echo
        self._on_stderr_line = on_stderr_line
        self._pumps = [
            threading.Thread(target=self._pump_stdout, name=f"{name}-stdout", daemon=True),
            threading.Thread(target=self._pump_stderr, name=f"{name}-stderr", daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    @classmethod
    def start(cls, command: Sequence[str], *, name: str, env: dict[str, str | None] | None = None,
              start_timeout_s: float = START_TIMEOUT_S, tail_lines: int = TAIL_LINES, echo: bool | None = None,
              on_stderr_line: Callable[[str], None] | None = None, port: int | None = 0) -> ServerProcess:
        """Start ``command --port PORT`` (0: any free port; a replacement replica reuses its predecessor's; None:
        the command takes no --port); ``start_timeout_s`` bounds everything up to the ready line.

        ``env`` is added to this process's environment (a value of None removes the variable). ``echo`` (default:
        the ``IMAGEWIRE_SERVER_LOGS`` variable) copies the child's stderr here live; ``on_stderr_line`` sees every
        stderr line (from a thread).
        """
        argv = [*command] if port is None else [*command, "--port", str(port)]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=_environment(env or {}),
        )
        if echo is None:
            echo = os.environ.get(ECHO_ENV, "") not in ("", "0")
        return cls(name, argv, process, deadline=time.monotonic() + start_timeout_s, tail_lines=tail_lines, echo=echo,
                   on_stderr_line=on_stderr_line)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def wait_listening(self) -> str:
        """Wait for the listening line; returns (and sets ``target`` to) the announced ``HOST:PORT``."""
        if not self.target:
            self.target = self._wait_for(lambda line: listening_address(self.name, line), "listening line")
        return self.target

    def wait_ready(self) -> str:
        """Wait for the listening line, then the ready line (models loaded and warmed); returns the ready line."""
        self.wait_listening()
        if not self.ready_line:
            self.ready_line = self._wait_for(lambda line: line if is_ready_line(self.name, line) else None,
                                             "ready line")
        return self.ready_line

    def drain_stdout(self) -> list[str]:
        """The stdout lines not read yet, without waiting (for a process that prints a log there, such as
        Envoy's access log, rather than announcement lines)."""
        lines: list[str] = []
        while True:
            try:
                line = self._stdout.get_nowait()
            except queue.Empty:
                return lines
            if line is None:
                self._stdout.put(None)
                return lines
            lines.append(line)

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr (bounded, oldest first)."""
        with self._tail_lock:
            return "\n".join(self._tail)

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (a graceful drain), SIGKILL if it is still running after ``timeout_s``; returns the exit code.

        Safe to call again: a stopped process just reports its code.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._join_pumps()
        return self.process.returncode

    def _wait_for(self, match: Callable[[str], _T | None], what: str) -> _T:
        # Blocks on the next stdout line or the deadline, whichever comes first: a silent server still times out.
        # Lines that arrived in time still count when read after the deadline (a caller that waited for other
        # servers first): past it, only what is already queued is read.
        while True:
            remaining = self._deadline - time.monotonic()
            try:
                line = self._stdout.get(timeout=remaining) if remaining > 0 else self._stdout.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._stdout.put(None)  # stdout stays closed for any later wait too
                raise self._failure(f"{self._exit_reason()} before its {what}")
            if (found := match(line)) is not None:
                return found
        raise self._failure(f"printed no {what} before its start-up deadline")

    def _exit_reason(self) -> str:
        # Stdout closes as the process exits; give it until the deadline to be reaped so its code can be told.
        try:
            code = self.process.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return "closed its stdout"
        self._join_pumps()  # the whole stderr, so the tail ends with the reason it exited
        return f"exited with code {code}"

    def _failure(self, reason: str) -> ServerStartError:
        tail = self.stderr_tail() or "(nothing)"
        return ServerStartError(f"{self.name} {reason}; the last lines of its stderr:\n{tail}")

    def _pump_stdout(self) -> None:
        for line in _lines(self.process.stdout):
            self._stdout.put(line)
        self._stdout.put(None)

    def _pump_stderr(self) -> None:
        for line in _lines(self.process.stderr):
            with self._tail_lock:
                self._tail.append(line)
            if self._echo:
                print(f"[{self.name}] {line}", file=sys.stderr, flush=True)
            if self._on_stderr_line is not None:
                self._on_stderr_line(line)

    def _join_pumps(self) -> None:
        for pump in self._pumps:
            pump.join(timeout=_PUMP_JOIN_S)


def _environment(changes: dict[str, str | None]) -> dict[str, str]:
    """This process's environment with ``changes`` applied, unbuffered (so lines arrive as they are written, even
    from a child that prints without flushing)."""
    merged = {**os.environ, "PYTHONUNBUFFERED": "1", **changes}
    return {name: value for name, value in merged.items() if value is not None}


def _lines(stream: IO[str] | None) -> Iterator[str]:
    assert stream is not None, "started with both pipes"
    with stream:
        for line in stream:
            yield line.rstrip("\n")


@contextlib.contextmanager
def launch(command: Sequence[str], *, name: str, env: dict[str, str | None] | None = None, wait_ready: bool = True,
           start_timeout_s: float = START_TIMEOUT_S, port: int = 0,
           on_stderr_line: Callable[[str], None] | None = None) -> Iterator[ServerProcess]:
    """Start a server on ``port`` (0: any free one), wait until it listens (and, with ``wait_ready``, is ready),
    always stop it."""
    with ServerProcess.start(command, name=name, env=env, start_timeout_s=start_timeout_s, port=port,
                             on_stderr_line=on_stderr_line) as server:
        if wait_ready:
            server.wait_ready()
        else:
            server.wait_listening()
        yield server
