"""Chaos within a CI budget: two captioners and two animators (subprocesses, float32, one thread each) behind the
real Envoy, three threads captioning and two downloading videos through the Python client, while a replica of each
service in turn is SIGKILLed at random and restarted on its port. Every caption is answered, and every video is
byte-identical to an undisturbed run of its seed. (``python -m bench.chaos_bench`` is the long run.)"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

from bench.chaos import Chaos, reference_videos
from bench.replicas import ANIMATOR, CAPTIONER, Fleet
from tests.support import solid

SEEDS = [1, 2, 3]
CHAOS_S = 30.0
KILL_EVERY_S = (4.0, 7.0)


# The killer is a thread: if it died (as it did when it restarted a replica killed before it listened), the run
# would go on without kills.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_replicas_killed_at_random_lose_no_caption_and_change_no_video(tiny_caption_model: str,
                                                                       tmp_path: Path) -> None:
    image = solid(size=(96, 64))
    started = time.monotonic()
    with Fleet(caption_model=tiny_caption_model, captioners=2, animators=2, python=sys.executable) as fleet:
        ready = time.monotonic()
        references = reference_videos(fleet.of(ANIMATOR)[0].address, image, SEEDS, tmp_path)
        chaos = Chaos(fleet, image=image, seeds=SEEDS, references=references, workdir=tmp_path,
                      kill_every_s=KILL_EVERY_S, rss_every_s=2.0, rng=random.Random(7))
        chaos_started = time.monotonic()
        tally = chaos.run(CHAOS_S).figures()
        print(f"fleet {ready - started:.1f} s, references {chaos_started - ready:.1f} s, "
              f"chaos {time.monotonic() - chaos_started:.1f} s: {tally}")
        # A replica killed again before its replacement said where it listens comes back on its port all the same.
        victim = fleet.of(CAPTIONER)[0]
        fleet.kill_and_restart(victim)
        fleet.kill_and_restart(victim)
        assert victim.wait_ready(timeout_s=120) and victim.server.target == victim.address
    assert tally["captions"]["failed"] == 0 and tally["captions"]["ok"] > 50, tally
    assert tally["videos"]["failed"] == tally["videos"]["differing"] == 0 and tally["videos"]["ok"] >= 4, tally
    assert tally["kills_by_service"]["animator"] >= 1 and tally["kills_by_service"]["captioner"] >= 1, tally
    # Every replica of a service, restarted or not, reports one provenance.
    assert [len(keys) for keys in tally["provenance_keys"].values()] == [1, 1], tally
