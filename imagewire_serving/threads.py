"""How many CPU threads a server's model operations use, and how those threads wait between operations.

Thread count: the CPUs this process may run on (its affinity mask, lowered by a container's CPU quota), or
``--threads``. PyTorch's own default counts the machine's cores, which in a container limited to 2 CPUs on a
64-core node means 64 threads fighting over 2 CPUs' worth of time.

Waiting: PyTorch's CPU operations run on an OpenMP team, and after each operation the team's threads wait for the
next. GNU OpenMP's default has them spin for ~300,000 iterations first; the wait policy is read once, when torch
loads, so it is set by :func:`prepare_openmp` before that. See docs/hardware.md for the measurements behind the
choice and how an operator overrides it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import MutableMapping
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

# The variables through which an operator chooses the wait policy; when any is set, the server sets none.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
WAIT_DEFAULT = {"OMP_WAIT_POLICY": "PASSIVE"}

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def prepare_openmp(environ: MutableMapping[str, str] | None = None) -> None:
    """Set the OpenMP wait policy before torch loads, unless the operator set one."""
    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in WAIT_VARIABLES):
        environ.update(WAIT_DEFAULT)


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, lowered to a cgroup CPU quota (a container's CPU limit)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    if quota is not None:
        # A quota of 1.5 CPUs gives 2 threads: the second still has half a CPU of time to use.
        count = min(count, max(1, math.ceil(quota)))
    return count


def cgroup_cpu_quota() -> float | None:
    """The container's CPU limit in CPUs (cgroup v2 ``cpu.max`` or v1 CFS quota), or None when unlimited."""
    try:
        if _CGROUP_V2.is_file():
            quota, period = _CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_path, period_path = _CGROUP_V1
        if quota_path.is_file() and period_path.is_file():
            quota_us = int(quota_path.read_text())
            return None if quota_us <= 0 else quota_us / int(period_path.read_text())
    except (OSError, ValueError):  # unreadable or unexpected: no limit known
        return None
    return None


def apply_threads(threads: int | None) -> str:
    """Set torch's intra-op thread count; returns what was set and why, for the start-up log.

    ``threads`` (``--threads``) when given; else torch's own count (one per CPU of the affinity mask, or
    OMP_NUM_THREADS) lowered to :func:`usable_cpus`, which also counts a container's CPU quota. Called before the
    device thread's first operation: each thread takes the count when it first computes.
    """
    import torch

    count = threads or min(torch.get_num_threads(), usable_cpus())
    torch.set_num_threads(count)
    waits = ", ".join(f"{name}={os.environ[name]}" for name in WAIT_VARIABLES if os.environ.get(name))
    return (f"{count} CPU thread(s) for model operations "
            f"({'--threads' if threads else 'the CPUs this process may use'}); "
            f"OpenMP waits: {waits or 'OpenMP default'}")
