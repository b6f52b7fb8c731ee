"""Replicas of both services (subprocesses) behind the real Envoy front door, killed and restarted on their ports:
the fleet of the chaos test (tests/test_chaos.py), the stream-reset test (tests/test_frontdoor_reset.py) and the
chaos command (bench/chaos_bench.py).

Every replica runs with the same explicit settings (``--dtype float32``, one thread), so all of a service's
replicas report one provenance key and give the same video for a seed.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading

from imagewire.client import AnimateClient, ImagewireError

from imagewire_serving.frontdoor import Envoy, FrontDoor
from imagewire_serving.launcher import ServerProcess

ANIMATOR = "imagewire-animator"
CAPTIONER = "imagewire-captioner"
CLUSTERS = {ANIMATOR: "animator", CAPTIONER: "captioner"}
# Every replica alike: float32 (no timed dtype choice) and one thread (the thread count changes the bytes).
COMMON = ("--device", "cpu", "--dtype", "float32", "--threads", "1", "--log-format", "json", "--grace", "5")
ENV = {"OMP_NUM_THREADS": "1"}


def solid_png(size: tuple[int, int] = (96, 64)) -> bytes:
    """The image every call sends: one colour, PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def rss_mib(pid: int) -> float | None:
    """A process's resident memory in MiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class Replica:
    """One server of a service; :meth:`restart` replaces a dead one on the same port."""

    def __init__(self, name: str, command: list[str], slot: int) -> None:
        self.name = name
        self.slot = slot
        self._command = command
        self.lives: list[ServerProcess] = []
        self._ready = threading.Event()
        self._start(port=0).wait_ready()
        # Every later life serves on the first one's port: a life killed before it said so still has it.
        self.address = self.server.target
        self._ready.set()

    @property
    def server(self) -> ServerProcess:
        return self.lives[-1]

    @property
    def ready(self) -> bool:
        """Whether the current process announced it serves."""
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the current process serves (False: not within ``timeout_s``)."""
        return self._ready.wait(timeout_s)

    def _start(self, port: int) -> ServerProcess:
        self.lives.append(ServerProcess.start([*self._command], name=self.name, env=dict(ENV), port=port))
        return self.server

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        self._ready.clear()
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait()

    def restart(self) -> None:
        """Start the replacement of the killed process on its port; :attr:`ready` once it serves."""
        port = int(self.address.rpartition(":")[2])
        server = self._start(port)
        threading.Thread(target=self._wait_ready, args=(server,), daemon=True).start()

    def _wait_ready(self, server: ServerProcess) -> None:
        with contextlib.suppress(Exception):  # killed again before it was ready: the next life reports
            server.wait_ready()
            if server is self.server:
                self._ready.set()

    def stop(self) -> None:
        for server in self.lives:
            server.terminate(timeout_s=5)


class Fleet:
    """``captioners`` and ``animators`` replicas behind one Envoy; a context manager that stops them all."""

    def __init__(self, *, caption_model: str | None, captioners: int, animators: int, python: str,
                 health_interval_s: float = 0.25) -> None:
        self.replicas: list[Replica] = []
        self.envoy: Envoy | None = None
        commands = {
            CAPTIONER: [python, "-m", "captioner", "--model", caption_model or "", *COMMON,
                        "--default-max-new-tokens", "4"],
            ANIMATOR: [python, "-m", "animator", *COMMON],
        }
        starting = [(CAPTIONER, slot) for slot in range(captioners)] + [(ANIMATOR, slot) for slot in range(animators)]
        try:
            # Started side by side: each waits for its own ready line.
            threads = [threading.Thread(target=self._add, args=(name, commands[name], slot)) for name, slot in starting]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if len(self.replicas) != len(starting):
                raise RuntimeError("a replica failed to start")
            self.replicas.sort(key=lambda r: (r.name, r.slot))
            self.envoy = Envoy.start(FrontDoor(captioners=[r.address for r in self.of(CAPTIONER)],
                                               animators=[r.address for r in self.of(ANIMATOR)],
                                               health_interval_s=health_interval_s))
            for name in (CAPTIONER, ANIMATOR):
                if self.of(name):
                    self.envoy.wait_healthy(CLUSTERS[name], len(self.of(name)))
        except BaseException:
            self.close()
            raise

    def _add(self, name: str, command: list[str], slot: int) -> None:
        replica = Replica(name, command, slot)
        self.replicas.append(replica)

    @property
    def target(self) -> str:
        assert self.envoy is not None
        return self.envoy.target

    def of(self, name: str) -> list[Replica]:
        return [replica for replica in self.replicas if replica.name == name]

    def holder(self, job_id: str) -> Replica | None:
        """The animator replica holding job ``job_id`` (asked directly: the others answer NOT_FOUND)."""
        for replica in self.of(ANIMATOR):
            with AnimateClient(replica.address, max_attempts=1) as client, contextlib.suppress(ImagewireError):
                for _ in client.watch(job_id, timeout=10):
                    return replica  # its first event: the job is there (leaving stops only the watch)
        return None

    def kill_and_restart(self, replica: Replica) -> None:
        replica.kill()
        replica.restart()

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.terminate()
        # Side by side: each drains for up to its grace.
        stopping = [threading.Thread(target=replica.stop) for replica in self.replicas]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
