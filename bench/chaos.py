"""A fleet under chaos: captioner and animator replicas (subprocesses) behind the real Envoy front door, mixed
traffic through the Python client, and replicas SIGKILLed at random and restarted on their ports.

What the chaos test (tests/test_chaos.py) and the chaos command (bench/chaos_bench.py) share. Every replica runs
with the same explicit settings (``--dtype float32``, one thread), so all of a service's replicas report one
provenance key and give the same video for a seed; a video counts as *differing* when its bytes (verified by the
client's length and SHA-256 check) are not those of an undisturbed run of its seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagewire.client import (
    AnimateClient,
    AnimateEvent,
    AnimateFields,
    CaptionClient,
    ImagewireError,
    JobStatus,
    Resume,
)

from imagewire_serving.frontdoor import Envoy, FrontDoor
from imagewire_serving.launcher import ServerProcess

ANIMATOR = "imagewire-animator"
CAPTIONER = "imagewire-captioner"
CLUSTERS = {ANIMATOR: "animator", CAPTIONER: "captioner"}
# Every replica alike: float32 (no timed dtype choice) and one thread (the thread count changes the bytes).
COMMON = ("--device", "cpu", "--dtype", "float32", "--threads", "1", "--log-format", "json", "--grace", "5")
ENV = {"OMP_NUM_THREADS": "1"}
# A short video of several decode chunks, so that a kill often falls mid-stream.
VIDEO: AnimateFields = {"width": 64, "height": 64, "num_frames": 6, "num_inference_steps": 2, "decode_chunk_size": 2}
CAPTION_TIMEOUT_S = 60.0
VIDEO_TIMEOUT_S = 180.0
_ERRORS_KEPT = 10


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
        self._ready.set()

    @property
    def server(self) -> ServerProcess:
        return self.lives[-1]

    @property
    def address(self) -> str:
        return self.server.target

    @property
    def ready(self) -> bool:
        """Whether the current process announced it serves."""
        return self._ready.is_set()

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
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reference_videos(target: str, image: bytes, seeds: list[int], workdir: Path) -> dict[int, bytes]:
    """The SHA-256 of each seed's video from an undisturbed run (one replica, called directly)."""
    path = workdir / "reference.mp4"
    found: dict[int, bytes] = {}
    with AnimateClient(target, timeout=VIDEO_TIMEOUT_S) as client:
        for seed in seeds:
            fields: AnimateFields = {**VIDEO, "seed": seed}
            found[seed] = client.animate_to_file(image, path, **fields).sha256
    return found


@dataclass
class Tally:
    """What the chaos run counted."""

    captions_ok: int = 0
    captions_failed: int = 0
    videos_ok: int = 0
    videos_failed: int = 0
    videos_differing: int = 0
    # Videos whose download took more than one stream (resumed or started over).
    videos_resumed: int = 0
    kills: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str, error: BaseException) -> None:
        with self.lock:
            if len(self.errors) < _ERRORS_KEPT:
                self.errors.append(f"{what}: {error}")

    def figures(self) -> dict[str, Any]:
        return {
            "captions": {"ok": self.captions_ok, "failed": self.captions_failed},
            "videos": {"ok": self.videos_ok, "failed": self.videos_failed, "differing": self.videos_differing,
                       "resumed_or_restarted": self.videos_resumed},
            "kills": len(self.kills),
            "kills_by_service": {name: sum(k["service"] == name for k in self.kills) for name in CLUSTERS.values()},
            "provenance_keys": {name: sorted(keys) for name, keys in self.provenance.items()},
            "first_errors": self.errors,
        }


class Chaos:
    """Mixed traffic through the fleet's Envoy and a killer, for ``duration_s``; :meth:`run` returns the tally."""

    def __init__(self, fleet: Fleet, *, image: bytes, seeds: list[int], references: dict[int, bytes],
                 workdir: Path, caption_threads: int = 3, video_threads: int = 2,
                 kill_every_s: tuple[float, float] = (8.0, 15.0), rss_every_s: float = 5.0,
                 rng: random.Random | None = None) -> None:
        self.fleet = fleet
        self.image = image
        self.seeds = seeds
        self.references = references
        self.workdir = workdir
        self.caption_threads = caption_threads
        self.video_threads = video_threads
        self.kill_every_s = kill_every_s
        self.rss_every_s = rss_every_s
        self.rng = rng or random.Random(20)
        self.tally = Tally()
        self._stop = threading.Event()
        self._started = 0.0

    def run(self, duration_s: float) -> Tally:
        self._started = time.monotonic()
        workers = [*(self._thread(self._captions, n) for n in range(self.caption_threads)),
                   *(self._thread(self._videos, n) for n in range(self.video_threads)),
                   self._thread(self._killer, 0), self._thread(self._sampler, 0)]
        self._stop.wait(duration_s)
        self._stop.set()
        for worker in workers:
            worker.join()
        self._sample()
        return self.tally

    def _thread(self, target: Callable[[int], None], number: int) -> threading.Thread:
        thread = threading.Thread(target=target, args=(number,), name=f"{target.__name__}-{number}", daemon=True)
        thread.start()
        return thread

    def _captions(self, number: int) -> None:
        with CaptionClient(self.fleet.target, health_check=False, timeout=CAPTION_TIMEOUT_S) as client:
            while not self._stop.is_set():
                try:
                    response = client.caption(self.image)
                except ImagewireError as error:
                    with self.tally.lock:
                        self.tally.captions_failed += 1
                    self.tally.error("caption", error)
                    continue
                with self.tally.lock:
                    self.tally.captions_ok += 1
                    self.tally.provenance.setdefault(CLUSTERS[CAPTIONER], set()).add(response.provenance_key)

    def _videos(self, number: int) -> None:
        count = 0
        with AnimateClient(self.fleet.target, health_check=False, timeout=VIDEO_TIMEOUT_S) as client:
            while not self._stop.is_set():
                seed = self.rng.choice(self.seeds)
                path = self.workdir / f"video-{number}-{count}.mp4"
                streams = 0

                def on_event(event: AnimateEvent) -> None:
                    nonlocal streams
                    streams += isinstance(event, JobStatus)

                fields: AnimateFields = {**VIDEO, "job_id": f"chaos-{number}-{count}-{seed}", "seed": seed}
                try:
                    result = client.animate_to_file(self.image, path, on_event=on_event, resume=Resume(), **fields)
                except ImagewireError as error:
                    with self.tally.lock:
                        self.tally.videos_failed += 1
                    self.tally.error(f"video seed {seed}", error)
                    continue
                finally:
                    count += 1
                with self.tally.lock:
                    same = hashlib.sha256(path.read_bytes()).digest() == self.references[seed] == result.sha256
                    self.tally.videos_ok += same
                    self.tally.videos_differing += not same
                    self.tally.videos_resumed += streams > 1
                    if result.provenance is not None:
                        self.tally.provenance.setdefault(CLUSTERS[ANIMATOR], set()).add(result.provenance.key)
                path.unlink()

    def _killer(self, number: int) -> None:
        services = sorted({replica.name for replica in self.fleet.replicas})
        turn = 0
        while not self._stop.wait(self.rng.uniform(*self.kill_every_s)):
            # The services in turn (each is hit however short the run), a random replica of it, never the last
            # serving one: a call then has nowhere to go.
            service = services[turn % len(services)]
            victims = [r for r in self.fleet.of(service)
                       if r.server.process.poll() is None
                       and all(other.ready for other in self.fleet.of(service) if other is not r)]
            if not victims:
                continue
            turn += 1
            victim = self.rng.choice(victims)
            at = round(time.monotonic() - self._started, 1)
            self.fleet.kill_and_restart(victim)
            with self.tally.lock:
                self.tally.kills.append({"at_s": at, "service": CLUSTERS[victim.name], "slot": victim.slot})

    def _sampler(self, number: int) -> None:
        while not self._stop.wait(self.rss_every_s):
            self._sample()

    def _sample(self) -> None:
        at = round(time.monotonic() - self._started, 1)
        # Serving replicas only: a life's samples begin after its warm-up.
        for replica in (r for r in self.fleet.replicas if r.ready):
            pid = replica.server.process.pid
            rss = rss_mib(pid)
            if rss is not None:
                with self.tally.lock:
                    self.tally.rss.append({"at_s": at, "service": CLUSTERS[replica.name], "slot": replica.slot,
                                           "life": len(replica.lives), "rss_mib": rss})
        if self.fleet.envoy is not None and (rss := rss_mib(self.fleet.envoy.process.process.pid)) is not None:
            with self.tally.lock:
                self.tally.rss.append({"at_s": at, "service": "envoy", "slot": 0, "life": 1, "rss_mib": rss})


def rss_summary(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per process life (service, slot, life): its samples' first, last and largest RSS, and how long it was
    sampled."""
    lives: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for sample in samples:
        lives.setdefault((sample["service"], sample["slot"], sample["life"]), []).append(sample)
    return [{"service": service, "slot": slot, "life": life, "samples": len(found),
             "sampled_s": round(found[-1]["at_s"] - found[0]["at_s"], 1), "first_mib": found[0]["rss_mib"],
             "last_mib": found[-1]["rss_mib"], "max_mib": max(s["rss_mib"] for s in found)}
            for (service, slot, life), found in sorted(lives.items())]

