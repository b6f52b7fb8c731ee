"""Three captioner replicas (subprocesses, tiny model) behind Envoy and behind the client's own balancing: no call
is lost when a replica is killed or restarted, and a replica that is not SERVING gets no new calls."""

from __future__ import annotations

import contextlib
import datetime
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from imagewire.client import CaptionClient

from imagewire_serving.frontdoor import Envoy, FrontDoor
from tests.fleet import IMAGE, Replica, Traffic, path_of
from tests.gates import poll_until
from tests.support import script

PATHS = ("envoy", "direct")
Request = reflection_pb2.ServerReflectionRequest
CONNECTION_AGE_S = 10.0  # tests.fleet.FLAGS


class Fleet:
    """Three replicas, Envoy in front of them, and a client of each path, connected before anything happens."""

    def __init__(self, model: str, stack: contextlib.ExitStack) -> None:
        self.model = model
        self.replicas = [Replica(model) for _ in range(3)]
        self.retired: list[Replica] = []
        for replica in self.replicas:
            stack.callback(lambda r=replica: r.server.terminate(timeout_s=5))  # a no-op for one already gone
            replica.server.wait_ready()
        self.addresses = [replica.address for replica in self.replicas]
        self.envoy = stack.enter_context(Envoy.start(FrontDoor(captioners=self.addresses, animators=(),
                                                               health_interval_s=0.25)))
        self.envoy.wait_healthy("captioner", 3)
        self.direct_target = "ipv4:" + ",".join(self.addresses)
        self.clients = {
            # Through Envoy, the health checks are Envoy's.
            "envoy": stack.enter_context(CaptionClient(self.envoy.target, health_check=False)),
            "direct": stack.enter_context(CaptionClient(self.direct_target)),
        }
        self._stack = stack

    def replace(self, index: int, gate: Path | None = None) -> Replica:
        """Start the replacement of replica ``index`` on its port (the old one must have exited)."""
        replica = Replica(self.model, port=self.replicas[index].port, gate=gate)
        self._stack.callback(lambda: replica.server.terminate(timeout_s=5))
        self.retired.append(self.replicas[index])
        self.replicas[index] = replica
        return replica

    def failures(self) -> list[object]:
        """What every replica, past or present, and Envoy logged of calls that did not succeed (for a failing
        assertion's message)."""
        calls = [(r.address, e["rpc"]) for r in (*self.retired, *self.replicas) for e in r.log
                 if e.get("rpc", {}).get("code", "OK") != "OK"]
        access = [line for line in self.envoy.access_log()
                  if '"grpc_status":0' not in line and "/grpc.health.v1.Health/" not in line]
        return [*calls, *access]

    def traffic(self, callers: int, total: int | None = None) -> dict[str, Traffic]:
        return {path: Traffic(self.clients[path], path, callers, total) for path in PATHS}


@pytest.fixture(scope="module")
def fleet(tiny_caption_model: str) -> Iterator[Fleet]:
    with contextlib.ExitStack() as stack:
        yield Fleet(tiny_caption_model, stack)


def served_every_path(replica: Replica, paths: tuple[str, ...] = PATHS) -> bool:
    return all(replica.calls(path) for path in paths)


# Enough that the CLI is still running when the replica dies, on a loaded host too (200 once finished first).
CLI_CAPTIONS = 500


def test_a_killed_replica_loses_no_call_through_envoy_the_client_or_the_cli(fleet: Fleet, tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(IMAGE)
    cli = subprocess.Popen(
        [script("imagewire"), "caption", *[str(image)] * CLI_CAPTIONS, "--target", fleet.direct_target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    traffic = fleet.traffic(callers=8, total=300)
    victim = fleet.replicas[0]
    # Every replica has served calls of every path (the CLI's too) before one of them dies mid-run.
    poll_until(lambda: all(served_every_path(r, (*PATHS, "cli")) for r in fleet.replicas), what="calls everywhere")
    assert cli.poll() is None and all(t.done < 300 for t in traffic.values())
    victim.server.process.send_signal(signal.SIGKILL)
    for path in traffic.values():
        path.join()
    stdout, stderr = cli.communicate(timeout=120)
    assert [t.errors for t in traffic.values()] == [[], []], fleet.failures()
    assert [t.done for t in traffic.values()] == [300, 300]
    assert cli.returncode == 0, stderr
    assert len(stdout.splitlines()) == CLI_CAPTIONS
    assert victim.server.process.wait(timeout=10) == -signal.SIGKILL
    fleet.replace(0).server.wait_ready()
    fleet.envoy.wait_healthy("captioner", 3)


def test_rolling_restart_loses_no_call_and_not_serving_replicas_get_none(fleet: Fleet, tmp_path: Path) -> None:
    traffic = fleet.traffic(callers=2)
    for index in range(3):
        drain(fleet, fleet.replicas[index], traffic)
        gate = tmp_path / f"loaded-{index}"
        replacement = fleet.replace(index, gate=gate)
        replacement.server.wait_listening()
        # Listening, NOT_SERVING while its model "loads": calls keep flowing, none of them to it.
        for path in traffic.values():
            poll_until(path.more(20), what=f"{path.path} calls while replica {index} loads")
        assert replacement.calls() == []
        gate.touch()
        replacement.server.wait_ready()
        ready = datetime.datetime.now(datetime.UTC)
        # The clients connected before the restart find the replacement on their own.
        poll_until(lambda r=replacement: served_every_path(r), timeout=CONNECTION_AGE_S,
                   what=f"calls to replacement {index}")
        assert min(started(call) for call in replacement.calls()) >= ready - datetime.timedelta(seconds=1)
    for path in traffic.values():
        path.join()
    assert {path: t.errors for path, t in traffic.items()} == {"envoy": [], "direct": []}, fleet.failures()
    assert all(t.done > 100 for t in traffic.values())


def drain(fleet: Fleet, replica: Replica, traffic: dict[str, Traffic]) -> None:
    """SIGTERM ``replica`` while a call of its own keeps it draining; no call is served by it once it drains; it
    exits 0 when that call ends."""
    with grpc.insecure_channel(replica.address) as channel:
        # A reflection stream: a call in flight that only ends when this test ends it.
        requests = [Request(list_services="")]
        finish = _Finish()
        held = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(finish.requests(requests),
                                                                                      timeout=60)
        next(held)
        replica.server.process.send_signal(signal.SIGTERM)
        poll_until(lambda: replica.logged("draining") is not None, what="the drain")
        draining = logged_at(replica.logged("draining"))
        for path in traffic.values():
            poll_until(path.more(20), what=f"{path.path} calls while a replica drains")
        assert replica.server.process.poll() is None  # still draining: the held call is in flight
        late = [call for call in replica.calls() if started(call) > draining + datetime.timedelta(seconds=0.05)]
        # Envoy learns of the drain at its next health check; until then its calls are refused (UNAVAILABLE,
        # before they start) and it retries them elsewhere. The client heard NOT_SERVING at once.
        assert [call for call in late if call["code"] != "UNAVAILABLE" or path_of(call) != "envoy"] == []
        finish.done()
        assert list(held) == []
    assert replica.server.process.wait(timeout=30) == 0


class _Finish:
    """A request iterator that ends when told to (the end of a client stream)."""

    def __init__(self) -> None:
        self._done = threading.Event()

    def requests(self, first: list[Request]) -> Iterator[Request]:
        yield from first
        self._done.wait(60)

    def done(self) -> None:
        self._done.set()


def logged_at(entry: dict[str, object] | None) -> datetime.datetime:
    assert entry is not None
    return datetime.datetime.fromisoformat(str(entry["ts"]).replace("Z", "+00:00"))


def started(call: dict[str, object]) -> datetime.datetime:
    """When a logged call started: its log line is written as it ends."""
    return logged_at(call) - datetime.timedelta(milliseconds=float(call["duration_ms"]))
