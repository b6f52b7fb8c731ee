"""The console entry point both servers share: process set-up before torch loads, flags, serve, exit status."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from imagewire_serving.metrics import Metrics
from imagewire_serving.server import fail_startup, run


def prepare_process() -> None:
    """Process-wide settings that must be in place before torch is imported; an operator's own setting wins."""
    # Busy-waiting OpenMP threads steal the cores from everything else on a shared CPU host (one bench caption
    # took 6.6 s instead of 1.2 s).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(app_type: Any, argv: Sequence[str] | None = None) -> int:
    """Parse the App's settings from flags and the environment, then serve until a signal; the exit status."""
    try:
        settings = app_type.settings_type.from_args(argv)
    except ValueError as error:
        return fail_startup(app_type.name, error)
    metrics = Metrics()
    return run(settings.server, app_type(settings, metrics), metrics, name=app_type.name)
