"""The console entry point both servers share: process set-up before torch loads, flags, serve, exit status."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from imagewire_serving.metrics import Metrics
from imagewire_serving.server import fail_startup, run
from imagewire_serving.settings import ServiceSettings
from imagewire_serving.threads import prepare_openmp


def prepare_process() -> None:
    """Process-wide settings that must be in place before torch is imported; an operator's own setting wins."""
    prepare_openmp()


def main(settings_type: type[ServiceSettings], app: str, argv: Sequence[str] | None = None) -> int:
    """Parse the settings from flags and the environment, then load the App (``module:class``) and serve until a
    signal; the exit status. The App's module (torch, the model libraries) is imported only once the settings are
    valid, so a bad flag or variable is refused in a fraction of a second."""
    try:
        settings = settings_type.from_args(argv)
    except ValueError as error:
        return fail_startup(settings_type.prog, error)
    module, name = app.split(":")
    app_type = getattr(importlib.import_module(module), name)
    metrics = Metrics()
    return run(settings.server, app_type(settings, metrics), metrics, name=settings_type.prog)
