"""Train the small BLIP captioner that the captioner ships as its default model.

The model is built from scratch (no pretrained weights, nothing downloaded) and learns to caption the synthetic
scenes of :mod:`captioner.training.shapes`::

    python -m captioner.training.train --out captioner/models/shapes-blip

This module is the command line. The pieces: ``settings`` (what decides a run), ``model`` (the untrained model
and its processor), ``batches``, ``loop`` (the training), ``evaluation`` (held-out accuracy) and ``card`` (what
is written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace

# On a shared 2-core machine, OpenMP threads that spin while waiting made training steps 5-10x slower; libgomp
# reads this only when torch loads it, so it must be set before the imports below load torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from captioner.training.card import save
from captioner.training.evaluation import evaluate
from captioner.training.loop import train
from captioner.training.settings import HELD_OUT_PAIR_SEEDS, HELD_OUT_SINGLE_SEEDS, TrainSettings

# The settings that are flags (--steps for ``steps``...); the rest keep their defaults or follow from these.
_FLAGS: tuple[str, ...] = (
    "out", "steps", "batch_size", "learning_rate", "seed", "threads", "image_size", "patch_size", "hidden_size",
    "intermediate_size", "vision_layers", "text_layers", "patch_loss_weight", "monitor_every", "eval_singles",
    "eval_pairs",
)
_HELP = {
    "out": "model directory to write",
    "threads": "fixed so runs repeat exactly",
    "monitor_every": "0 turns it off",
}


def parse_args(argv: Sequence[str] | None = None) -> TrainSettings:
    """The settings for a command line: a flag per name in ``_FLAGS``, typed and defaulted from the dataclass."""
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in _FLAGS:
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default, help=_HELP.get(name))
    args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in _FLAGS}
    values.update(
        # A short run warms up for a tenth of its steps; evaluation cannot use more seeds than the held-out ranges.
        warmup_steps=min(defaults.warmup_steps, max(1, args.steps // 10)),
        eval_singles=min(args.eval_singles, len(HELD_OUT_SINGLE_SEEDS)),
        eval_pairs=min(args.eval_pairs, len(HELD_OUT_PAIR_SEEDS)),
    )
    return replace(defaults, **values)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    model, processor, seconds = train(settings)
    summary = evaluate(model, processor, settings)
    save(model, processor, settings, summary, seconds)
    print(json.dumps({key: value for key, value in summary.items() if key != "first_failures"}, indent=2))


if __name__ == "__main__":
    main()
