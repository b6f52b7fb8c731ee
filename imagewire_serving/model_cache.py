"""A cache of models built locally from a recipe (the embedded and benchmark models of both services)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

_LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Presets are dataclasses: their fields are the recipe their cache key is made from.
PresetT = TypeVar("PresetT", bound="DataclassInstance")


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


@dataclass(frozen=True)
class LocalModels(Generic[PresetT]):
    """A family of models built locally from named presets (sizes), cached by :func:`build_once`.

    ``version`` is part of the cache key: bump it whenever ``build`` changes what it writes.
    """

    kind: str
    presets: Mapping[str, PresetT]
    build: Callable[[Path, PresetT], Path]
    version: int
    marker: str

    def ensure(self, name: str) -> Path:
        """The cached directory of a preset, built on first use."""
        preset = self.presets[name]
        recipe = {**dataclasses.asdict(preset), "builder": self.version}
        return build_once(f"{self.kind}-{name}", recipe, lambda out: self.build(out, preset), marker=self.marker)

    def main(self, description: str | None, argv: Sequence[str] | None = None) -> None:
        """``python -m <module> [--preset NAME] [--out DIR]``: build one preset and print its directory."""
        parser = argparse.ArgumentParser(description=description,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--preset", choices=sorted(self.presets), default="bench")
        parser.add_argument("--out", type=Path, help="directory to write (default: the cache)")
        args = parser.parse_args(argv)
        print(self.build(args.out, self.presets[args.preset]) if args.out else self.ensure(args.preset))
