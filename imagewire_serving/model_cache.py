"""A cache of models built locally from a recipe (the embedded and benchmark models of both services)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)


def cache_root() -> Path:
    """$IMAGEWIRE_CACHE, else ~/.cache/imagewire."""
    return Path(os.environ.get("IMAGEWIRE_CACHE", Path.home() / ".cache" / "imagewire"))


def build_once(name: str, recipe: dict[str, Any], build: Callable[[Path], object], *, marker: str) -> Path:
    """The cached directory for ``recipe``, running ``build(directory)`` on first use.

    The directory is keyed by a digest of the recipe, so a changed recipe builds anew. ``marker`` is a file the
    finished build contains. Building happens in a staging directory renamed into place, so servers and tests
    starting at once never load a half-written model; when two build together, the first rename wins and the
    copies are identical.
    """
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{name}-{digest}"
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(staging)
        with contextlib.suppress(OSError):
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _LOGGER.info("built %s at %s", name, target)
    return target
