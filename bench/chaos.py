"""Chaos in a fleet (:mod:`bench.replicas`): mixed traffic through the Envoy front door and the Python client while
replicas are SIGKILLed at random and restarted, and the tally of what happened.

What the chaos test (tests/test_chaos.py) and the chaos command (bench/chaos_bench.py) share. A video counts as
*differing* when its bytes (verified by the client's length and SHA-256 check) are not those of an undisturbed run
of its seed.
"""

from __future__ import annotations

import hashlib
import random
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

from bench.replicas import ANIMATOR, CAPTIONER, CLUSTERS, Fleet, rss_mib

# A short video of several decode chunks, so that a kill often falls mid-stream.
VIDEO: AnimateFields = {"width": 64, "height": 64, "num_frames": 6, "num_inference_steps": 2, "decode_chunk_size": 2}
CAPTION_TIMEOUT_S = 60.0
VIDEO_TIMEOUT_S = 180.0
_ERRORS_KEPT = 10


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

