"""The console entry point both servers share: process set-up before torch loads, flags, serve, exit status."""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable, Sequence

from imagewire_serving.metrics import Metrics
from imagewire_serving.server import fail_startup, run
from imagewire_serving.settings import ServiceSettings, looks_like_a_path
from imagewire_serving.threads import prepare_openmp


def prepare_process() -> None:
    """Process-wide settings that must be in place before torch is imported; an operator's own setting wins."""
    prepare_openmp()


# How long resolving the hub's name may take before it counts as unreachable.
_HUB_LOOKUP_S = 3.0


def check_hub_reachable(models: Sequence[str]) -> None:
    """ValueError, before the server listens, for a hub id that is not in the Hugging Face cache while the hub's
    name does not resolve (no network): loading it would retry for half a minute and log two dozen lines before
    failing. With HF_HUB_OFFLINE set, or with every hub id cached, nothing is looked up."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    from huggingface_hub import constants, try_to_load_from_cache

    missing = [model for model in models if not looks_like_a_path(model)
               and not isinstance(try_to_load_from_cache(model, "config.json"), str)
               and not isinstance(try_to_load_from_cache(model, "model_index.json"), str)]
    if not missing:
        return
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    lookup: concurrent.futures.Future[object] = concurrent.futures.Future()
    threading.Thread(target=lambda: _settle(lookup, lambda: socket.getaddrinfo(host, 443)), daemon=True).start()
    try:
        lookup.result(timeout=_HUB_LOOKUP_S)
    except (OSError, concurrent.futures.TimeoutError):
        raise ValueError(f"--model {missing[0]}: not in the Hugging Face cache, and {host} cannot be reached (no "
                         f"network?): fetch it where there is network (hf download {missing[0]}) or give a local "
                         "directory; HF_HUB_OFFLINE=1 skips this check") from None


def _settle(future: concurrent.futures.Future[object], call: Callable[[], object]) -> None:
    try:
        future.set_result(call())
    except OSError as error:
        future.set_exception(error)


def main(settings_type: type[ServiceSettings], app: str, argv: Sequence[str] | None = None) -> int:
    """Parse the settings from flags and the environment, then load the App (``module:class``) and serve until a
    signal; the exit status. The App's module (torch, the model libraries) is imported only once the settings are
    valid, so a bad flag or variable is refused in a fraction of a second."""
    try:
        settings = settings_type.from_args(argv)
        check_hub_reachable(settings.server.models)
    except ValueError as error:
        return fail_startup(settings_type.prog, error)
    module, name = app.split(":")
    app_type = getattr(importlib.import_module(module), name)
    metrics = Metrics()
    return run(settings.server, app_type(settings, metrics), metrics, name=settings_type.prog)
