"""The embedded shapes captioner's held-out accuracy in each dtype: what --dtype costs in captions.

    python -m bench.dtype_accuracy [--dtypes float32,bfloat16,float16] [--out FILE]

Runs the evaluation that made the model card's figures (``captioner.training.evaluation.evaluate``: 2,000
held-out scenes, greedy, plus 200 prompted ones) on ``captioner/models/shapes-blip`` loaded in each dtype, and
prints JSON with each dtype's accuracies, the change in points against float32 (the target: within 0.5 points
for the dtype ``--dtype auto`` picks, which is named), and the share of captions identical to float32's.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench import output
from imagewire_serving.threads import prepare_openmp

TARGET_POINTS = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dtype_accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="float32,bfloat16,float16", help="comma-separated dtypes to evaluate")
    output.add_out(parser)
    return parser.parse_args(argv)


def evaluate_in(dtype_name: str) -> tuple[dict[str, Any], list[str]]:
    """The evaluation's figures for the shipped model in one dtype, and its plain held-out captions."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from captioner.app import SHIPPED_MODEL
    from captioner.training import evaluation
    from captioner.training.settings import HELD_OUT_PAIR_SEEDS, HELD_OUT_SINGLE_SEEDS, TrainSettings

    model = BlipForConditionalGeneration.from_pretrained(SHIPPED_MODEL, dtype=getattr(torch, dtype_name)).eval()
    processor = BlipProcessor.from_pretrained(SHIPPED_MODEL)
    started = time.perf_counter()
    figures = evaluation.evaluate(model, processor, TrainSettings())
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures.pop("first_failures")
    examples = (evaluation.held_out_examples(HELD_OUT_SINGLE_SEEDS[:1000], 1)
                + evaluation.held_out_examples(HELD_OUT_PAIR_SEEDS[:1000], 2))
    captions = [text for first in range(0, len(examples), 100)
                for text in evaluation.caption(model, processor, [image for image, _ in examples[first:first + 100]])]
    return figures, captions


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_openmp()
    import torch

    from imagewire_serving.device import choose_dtype, dtype_name

    names = list(dict.fromkeys(["float32", *(d.strip() for d in args.dtypes.split(",") if d.strip())]))
    choice = choose_dtype("auto", torch.device("cpu"))
    out: dict[str, Any] = {"auto": [dtype_name(d) for d in choice.candidates], "auto_reason": choice.reason}
    reference: list[str] = []
    for name in names:
        figures, captions = evaluate_in(name)
        reference = reference or captions
        figures["identical_to_float32"] = round(sum(a == b for a, b in zip(captions, reference)) / len(reference), 4)
        out[name] = figures
    base = out["float32"]["exact_caption_accuracy"]
    out["points_vs_float32"] = {name: round(100 * (out[name]["exact_caption_accuracy"] - base), 2) for name in names}
    out["target_points"] = TARGET_POINTS
    return output.emit(out, args.out)


if __name__ == "__main__":
    sys.exit(main())
