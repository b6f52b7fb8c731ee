"""Video models built locally from configs, so the server, tests and benchmarks run offline: random weights,
the real pipelines' code paths.

Presets: ``tiny`` and ``bench`` (Stable Video Diffusion, :mod:`animator.tiny.svd`; ``tiny`` is the embedded
default), ``ltx-tiny`` (:mod:`animator.tiny.ltx`) and ``wan-tiny`` (:mod:`animator.tiny.wan`). Each is saved with
``save_pretrained`` into a cache directory keyed by its config and loaded back through the same
``from_pretrained`` path a hub model takes. ``python -m animator.tiny --preset NAME [--out DIR]`` builds one.

A built model directory also holds ``imagewire_animate.json``: the request defaults (size, frames, steps) suited
to that model, which the server uses instead of the real model's (SVD-XT's 1024x576 and 25 steps) that a tiny
model cannot run quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from animator.tiny import ltx, svd, wan
from animator.tiny.safety import build_safety_checker
from imagewire_serving.model_cache import LocalModels

# The SVD presets under their historical name (tests and benchmarks read their sizes).
PRESETS = svd.PRESETS
FAMILY_MODELS: tuple[LocalModels[Any], ...] = (svd.MODELS, ltx.MODELS, wan.MODELS)
# Every preset's builder, by preset name.
MODELS: dict[str, LocalModels[Any]] = {name: models for models in FAMILY_MODELS for name in models.presets}

__all__ = ["MODELS", "PRESETS", "build_safety_checker", "ensure_model", "main"]


def ensure_model(name: str) -> Path:
    """The cached directory of a preset (of any family), built on first use."""
    return MODELS[name].ensure(name)


def main(argv: list[str] | None = None) -> None:
    """``python -m animator.tiny [--preset NAME] [--out DIR]``: build one preset and print its directory."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(MODELS), default="bench")
    parser.add_argument("--out", type=Path, help="directory to write (default: the cache)")
    args = parser.parse_args(argv)
    models = MODELS[args.preset]
    print(models.build(args.out, models.presets[args.preset]) if args.out else ensure_model(args.preset))
