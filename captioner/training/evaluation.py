"""How well a captioner names the scenes: held-out accuracy for the model card, and progress checks in training.

Captions are made the way a server makes them, through the processor and the stock ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from captioner.training.settings import (
    HELD_OUT_PAIR_SEEDS,
    HELD_OUT_SINGLE_SEEDS,
    MONITOR_SEEDS,
    PROMPTS,
    TRAIN_SEED_BASE,
    TrainSettings,
)
from captioner.training.shapes import Scene, draw, scene_with

Examples = list[tuple[Image.Image, Scene]]


def caption(
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    images: Sequence[Image.Image],
    prompts: Sequence[str] | None = None,
    *,
    num_beams: int = 1,
    max_new_tokens: int = 20,
    padding_side: str | None = None,
) -> list[str]:
    """Caption ``images`` in one batch the way a server does, through the processor and ``generate``.

    ``padding_side`` overrides the saved tokenizer's (left) for prompts of different lengths.
    """
    text = list(prompts) if prompts is not None else None
    extra = {"padding_side": padding_side} if padding_side else {}
    inputs = processor(images=list(images), text=text, return_tensors="pt", padding=True, **extra)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)  # a model loaded in bfloat16 or float16
    with torch.inference_mode():
        output = model.generate(**inputs, num_beams=num_beams, max_new_tokens=max_new_tokens)
    return [text.strip() for text in processor.batch_decode(output, skip_special_tokens=True)]


def held_out_examples(seeds: Sequence[int], shapes: int, size: int = 96) -> Examples:
    """Held-out scenes with exactly ``shapes`` shapes; the seed ranges never overlap training seeds."""
    return [(draw(scene, size), scene) for scene in (scene_with(seed, shapes) for seed in seeds)]


def names_right_shape(text: str, scene: Scene) -> bool:
    """Whether the caption names every shape of the scene with its colour (order ignored)."""
    return all(f"{item.colour} {item.shape}" in text for item in scene.shapes)


def accuracy(hits: Sequence[bool]) -> float:
    """The fraction of hits, rounded for the report; NaN for none."""
    return round(sum(hits) / len(hits), 4) if hits else float("nan")


def evaluate(
    model: BlipForConditionalGeneration, processor: BlipProcessor, settings: TrainSettings, batch: int = 100
) -> dict[str, object]:
    """Held-out accuracy: exact captions, colour-and-shape naming, and prompted continuation."""
    model.eval()
    singles = held_out_examples(HELD_OUT_SINGLE_SEEDS[: settings.eval_singles], 1)
    pairs = held_out_examples(HELD_OUT_PAIR_SEEDS[: settings.eval_pairs], 2)
    results, failures = _plain_hits(model, processor, {"single": singles, "pair": pairs}, batch)
    # Mixed prompts in one batch, so this also checks the left-padded batched path.
    prompted = {side: _prompted_hits(model, processor, singles[:100] + pairs[:100], side, batch)
                for side in ("left", "right")}
    return {
        "held_out_seeds": {
            "single": [HELD_OUT_SINGLE_SEEDS.start, HELD_OUT_SINGLE_SEEDS.start + settings.eval_singles],
            "pair": [HELD_OUT_PAIR_SEEDS.start, HELD_OUT_PAIR_SEEDS.start + settings.eval_pairs],
            "training_from": TRAIN_SEED_BASE,
        },
        "images": {"single": len(singles), "pair": len(pairs), "prompted": len(prompted["left"])},
        "exact_caption_accuracy": accuracy(results["single_exact"] + results["pair_exact"]),
        "single_shape_exact": accuracy(results["single_exact"]),
        "single_shape_colour_and_shape": accuracy(results["single_named"]),
        "two_shape_exact": accuracy(results["pair_exact"]),
        "two_shape_both_named": accuracy(results["pair_named"]),
        "prompted_exact": accuracy(prompted["left"]),
        "prompted_exact_right_padded": accuracy(prompted["right"]),
        "decoding": "greedy, max_new_tokens=20, batches of 100 at 96x96 source size",
        "first_failures": failures,
    }


def _plain_hits(model: BlipForConditionalGeneration, processor: BlipProcessor, sets: dict[str, Examples],
                batch: int) -> tuple[dict[str, list[bool]], list[dict[str, str]]]:
    """Per set, exact and colour-and-shape hits with no prompt; and the first 20 wrong captions."""
    results: dict[str, list[bool]] = {f"{name}_{kind}": [] for name in sets for kind in ("exact", "named")}
    failures: list[dict[str, str]] = []
    for name, examples in sets.items():
        for first in range(0, len(examples), batch):
            chunk = examples[first : first + batch]
            texts = caption(model, processor, [image for image, _ in chunk])
            for text, (_, scene) in zip(texts, chunk, strict=True):
                results[f"{name}_exact"].append(text == scene.caption)
                results[f"{name}_named"].append(names_right_shape(text, scene))
                if text != scene.caption and len(failures) < 20:
                    failures.append({"expected": scene.caption, "got": text})
    return results, failures


def _prompted_hits(model: BlipForConditionalGeneration, processor: BlipProcessor, examples: Examples, side: str,
                   batch: int) -> list[bool]:
    """Whether each caption continues its prompt exactly, the trained prompts taking turns, padded on ``side``."""
    prompts = [PROMPTS[index % len(PROMPTS)] for index in range(len(examples))]
    hits: list[bool] = []
    for first in range(0, len(examples), batch):
        chunk, chunk_prompts = examples[first : first + batch], prompts[first : first + batch]
        texts = caption(model, processor, [image for image, _ in chunk], chunk_prompts, padding_side=side)
        for text, prompt, (_, scene) in zip(texts, chunk_prompts, chunk, strict=True):
            hits.append(text == f"{prompt} {scene.caption}")
    return hits


def monitor(model: BlipForConditionalGeneration, processor: BlipProcessor) -> dict[str, float]:
    """A quick progress check on the monitor seeds (never the held-out ones), half one shape, half two."""
    model.eval()
    monitored = [scene_with(seed, 1 + seed % 2) for seed in MONITOR_SEEDS]
    texts = caption(model, processor, [draw(scene, 96) for scene in monitored])
    return {
        "exact": accuracy([text == scene.caption for text, scene in zip(texts, monitored, strict=True)]),
        "named": accuracy([names_right_shape(text, scene) for text, scene in zip(texts, monitored, strict=True)]),
    }
