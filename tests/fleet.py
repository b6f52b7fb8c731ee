"""A fleet of captioner replicas as subprocesses, and closed-loop traffic through a client, for the fleet tests.

Each replica logs one JSON line per call; calls are told apart by their request ids, which each traffic source
prefixes with its path (``envoy-17``, ``direct-3``; the CLI's are bare uuids).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagewire.client import CaptionClient, ImagewireError

from imagewire_serving.app import LOAD_GATE_ENV
from imagewire_serving.launcher import ServerProcess
from tests.support import script, solid

NAME = "imagewire-captioner"
CAPTION = "/imagewire.caption.v1.CaptionService/Caption"
IMAGE = solid()
# Short captions, and connections aged every few seconds; one OpenMP thread (two cores for everything).
FLAGS = ("--device", "cpu", "--log-format", "json", "--default-max-new-tokens", "4", "--grace", "30",
         "--max-connection-age", "10")
ENV = {"OMP_NUM_THREADS": "1"}


class Replica:
    """One captioner process and every JSON log line it wrote."""

    def __init__(self, model: str, *, port: int = 0, gate: Path | None = None) -> None:
        self.log: list[dict[str, Any]] = []
        env = {**ENV, LOAD_GATE_ENV: str(gate)} if gate is not None else ENV
        self.server = ServerProcess.start([script(NAME), "--model", model, *FLAGS], name=NAME, env=env, port=port,
                                          on_stderr_line=self._line)

    def _line(self, line: str) -> None:
        if line.startswith("{"):
            self.log.append(json.loads(line))

    @property
    def address(self) -> str:
        return self.server.wait_listening()

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def calls(self, path: str | None = None) -> list[dict[str, Any]]:
        """The Caption calls it logged (their log fields and the line's ``ts``), all or those of one path
        (``envoy``, ``direct``, ``cli``)."""
        found = [{**entry["rpc"], "ts": entry["ts"]} for entry in list(self.log)
                 if entry.get("rpc", {}).get("method") == CAPTION]
        if path is None:
            return found
        return [rpc for rpc in found if path_of(rpc) == path]

    def logged(self, text: str) -> dict[str, Any] | None:
        """The first log entry whose message contains ``text``."""
        return next((entry for entry in list(self.log) if text in entry.get("message", "")), None)


def path_of(call: dict[str, Any]) -> str:
    """The path a logged call came by: ``envoy``, ``direct`` or ``cli``."""
    prefix, dash, _ = call["request_id"].partition("-")
    return prefix if dash and prefix in ("envoy", "direct") else "cli"


class Traffic:
    """``callers`` threads captioning through ``client`` until ``total`` calls were made (None: until stopped)."""

    def __init__(self, client: CaptionClient, path: str, callers: int, total: int | None = None) -> None:
        self.path = path
        self.done = 0
        self.errors: list[ImagewireError] = []
        self._client = client
        self._total = total
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._caller, daemon=True) for _ in range(callers)]
        for thread in self._threads:
            thread.start()

    def _caller(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                number = next(self._numbers)
            if self._total is not None and number >= self._total:
                return
            try:
                self._client.caption(IMAGE, request_id=f"{self.path}-{number}", timeout=60)
            except ImagewireError as error:
                with self._lock:
                    self.errors.append(error)
                continue
            with self._lock:
                self.done += 1

    def more(self, count: int) -> Callable[[], bool]:
        """A condition: ``count`` more calls have succeeded than now."""
        target = self.done + count
        return lambda: self.done >= target

    def join(self, timeout: float = 120.0) -> None:
        """Wait for the callers to finish (stopping them first when the traffic has no total)."""
        if self._total is None:
            self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"{self.path} traffic did not finish in {timeout:g}s"
