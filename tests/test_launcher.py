"""The server launcher against small stand-in servers: the address it learns, its deadline, its failure messages.

The stand-ins are plain Python scripts that print the real announcement lines, so these tests take milliseconds
where a model server would take seconds, and can misbehave on purpose.
"""

from __future__ import annotations

import signal
import socket
import sys
import time

import pytest

from imagewire_serving.launcher import ServerProcess, ServerStartError, launch

# Binds the port it is given (the launcher passes --port 0) and announces what it really bound.
_SERVING = """
import signal, socket, sys, time
from imagewire_serving.announce import listening_line, ready_line
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])))
sock.listen()
print("starting up")
print(listening_line("fake", "127.0.0.1:%d" % sock.getsockname()[1]), flush=True)
print("loading", file=sys.stderr, flush=True)
{before_ready}
print(ready_line("fake", 0.1), flush=True)
time.sleep(120)
"""


def _command(before_ready: str = "") -> list[str]:
    return [sys.executable, "-c", _SERVING.format(before_ready=before_ready)]


def test_learns_the_bound_address_and_stops_cleanly() -> None:
    with launch(_command(), name="fake") as server:
        host, port = server.target.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        socket.create_connection((host, int(port)), timeout=5).close()
        assert server.ready_line == "fake ready in 0.1s"
        # stderr is a separate pipe, read by its own thread: it may trail the ready line on stdout.
        deadline = time.monotonic() + 10
        while server.stderr_tail() != "loading" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stderr_tail() == "loading"
        assert server.terminate() == 0
    assert server.terminate() == 0  # stopping again only reports the code


def test_a_crash_reports_the_exit_code_and_the_stderr_tail() -> None:
    crash = "for n in range(100): print('noise', n, file=sys.stderr)\nsys.exit('boom: no model')"
    with pytest.raises(ServerStartError) as raised, launch(_command(before_ready=crash), name="fake"):
        pass
    message = str(raised.value)
    assert "fake exited with code 1 before its ready line" in message
    assert message.endswith("noise 99\nboom: no model")
    # Bounded: the oldest lines are gone.
    assert "noise 0\n" not in message and "loading" not in message


def test_the_deadline_holds_when_the_server_prints_nothing() -> None:
    started = time.monotonic()
    command = [sys.executable, "-c", "import sys, time; print('warming', file=sys.stderr, flush=True); time.sleep(120)"]
    with pytest.raises(ServerStartError, match="no listening line before its start-up deadline") as raised, \
            launch(command, name="fake", start_timeout_s=1.0) as _:
        pass
    assert time.monotonic() - started < 30
    assert raised.value.args[0].endswith("warming")


def test_lines_printed_in_time_count_when_read_after_the_deadline() -> None:
    # A caller starting several servers waits for one after another: this one announced itself at once, and is
    # ready, even though nobody read its lines before its deadline passed.
    with ServerProcess.start(_command(), name="fake", start_timeout_s=1.0) as server:
        time.sleep(1.5)
        assert server.wait_ready() == "fake ready in 0.1s"
        assert server.target.startswith("127.0.0.1:")


def test_a_server_that_ignores_sigterm_is_killed() -> None:
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    server = ServerProcess.start(_command(before_ready=ignore), name="fake")
    server.wait_ready()
    assert server.terminate(timeout_s=0.5) == -signal.SIGKILL
    assert server.process.poll() == -signal.SIGKILL


def test_env_adds_variables_and_none_removes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEWIRE_TEST_INHERITED", "from the parent")
    report = ("import os; print('seen:', os.environ.get('IMAGEWIRE_TEST_INHERITED'), "
              "os.environ.get('IMAGEWIRE_TEST_ADDED'), file=sys.stderr, flush=True)")
    env: dict[str, str | None] = {"IMAGEWIRE_TEST_INHERITED": None, "IMAGEWIRE_TEST_ADDED": "added"}
    with launch(_command(before_ready=report), name="fake", env=env) as server:
        deadline = time.monotonic() + 30  # stderr is read by its own thread: poll until the line is in
        while "seen:" not in server.stderr_tail() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "seen: None added" in server.stderr_tail()
        assert server.terminate() == 0
