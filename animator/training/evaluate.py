"""Measure the embedded video model on held-out scenes and write its ``eval.json`` and model card::

    python -m animator.training.evaluate --model animator/models/shapes-svd

The figures (see :mod:`animator.training.evaluation`) are printed as JSON and written next to the model with
the card (``README.md``), which also reads the training record the training command left there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see animator.training.train

import torch

from animator.training.card import write_card
from animator.training.evaluation import evaluate, load
from animator.training.settings import DEFAULT_OUT, HELD_OUT_SEEDS


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT, help="model directory (default: the shipped one)")
    parser.add_argument("--scenes", type=int, default=100, help=f"held-out scenes, at most {len(HELD_OUT_SEEDS)}")
    parser.add_argument("--side-scenes", type=int, default=30, help="of them, for the fps and noise checks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-card", action="store_true", help="print the figures only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    summary = evaluate(load(str(args.model)), min(args.scenes, len(HELD_OUT_SEEDS)), args.side_scenes)
    summary["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))
    if not args.no_card:
        (args.model / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_card(args.model)


if __name__ == "__main__":
    main()
