"""CPU threads: how many the servers use and how they wait (an idle server's CPU time: test_captioner_e2e.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagewire_serving import threads


def test_the_wait_policy_is_set_unless_the_operator_chose_one() -> None:
    environ: dict[str, str] = {}
    threads.prepare_openmp(environ)
    assert environ == threads.WAIT_DEFAULT
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        environ = dict(chosen)
        threads.prepare_openmp(environ)
        assert environ == chosen


def test_thread_count_is_the_cpus_this_process_may_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "_CGROUP_V2", quota)
    quota.write_text("max 100000\n")
    assert threads.cgroup_cpu_quota() is None and threads.usable_cpus() == affinity
    # A container limited to 1.5 CPUs gets 2 threads (or fewer where fewer CPUs are in its affinity mask).
    quota.write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota() == 1.5 and threads.usable_cpus() == min(affinity, 2)
    quota.write_text("50000 100000\n")
    assert threads.usable_cpus() == 1


def test_the_thread_count_is_applied_and_never_raised_past_what_was_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    previous = torch.get_num_threads()
    try:
        assert threads.apply_threads(1).startswith("1 CPU thread(s)") and torch.get_num_threads() == 1
        # No --threads: torch's count (here the 1 just set, as OMP_NUM_THREADS=1 would) lowered to the usable CPUs.
        assert threads.apply_threads(None).startswith("1 CPU thread(s)")
        monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
        torch.set_num_threads(max(2, previous))
        assert threads.apply_threads(None).startswith("1 CPU thread(s)") and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
