"""The console entry point both servers share: process set-up before torch loads, flags, serve, exit status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imagewire_serving.metrics import Metrics
from imagewire_serving.server import fail_startup, run
from imagewire_serving.threads import prepare_openmp


def prepare_process() -> None:
    """Process-wide settings that must be in place before torch is imported; an operator's own setting wins."""
    prepare_openmp()


def main(app_type: Any, argv: Sequence[str] | None = None) -> int:
    """Parse the App's settings from flags and the environment, then serve until a signal; the exit status."""
    try:
        settings = app_type.settings_type.from_args(argv)
    except ValueError as error:
        return fail_startup(app_type.name, error)
    metrics = Metrics()
    return run(settings.server, app_type(settings, metrics), metrics, name=app_type.name)
