"""Train the small BLIP captioner that the captioner ships as its default model.

The model is built from scratch (no pretrained weights, nothing downloaded) and learns to caption the synthetic
scenes of :mod:`captioner.training.shapes`::

    python -m captioner.training.train --out captioner/models/shapes-blip

Seeds: training scenes come from seeds ``>= TRAIN_SEED_BASE``; evaluation uses the disjoint held-out ranges
``HELD_OUT_SINGLE_SEEDS`` (one shape) and ``HELD_OUT_PAIR_SEEDS`` (two shapes), all below 10_000.

Token conventions (why the model works through the stock ``generate``): BLIP's ``generate`` overwrites
``input_ids[:, 0]`` with ``bos_token_id`` and drops the last column (the tokenizer's ``[SEP]``), while ``forward``
leaves ``input_ids`` alone. Using ``[CLS]`` as ``bos`` makes both see the same first token. The tokenizer pads on
the left so a batch with different prompts still ends every row in ``[SEP]`` (dropped) and keeps the real
``[CLS]`` of each row; training shifts some captions right by masked padding so the learned absolute positions
cope with that.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# On a shared 2-core machine, OpenMP threads that spin while waiting made training steps 5-10x slower; libgomp
# reads this only when torch loads it, so it must be set before the import below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from PIL import Image
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)

from captioner.training.shapes import (
    BACKGROUND_COLOURS,
    COLOURS,
    SHAPE_COLOURS,
    SHAPES,
    Scene,
    draw,
    make_example,
    random_scene,
    shape_mask,
)

_LOGGER = logging.getLogger(__name__)

TRAIN_SEED_BASE = 1_000_000
HELD_OUT_SINGLE_SEEDS = range(0, 1_000)
HELD_OUT_PAIR_SEEDS = range(5_000, 6_000)
# Progress checks during training use their own seeds, so nothing about training is tuned on the held-out set.
MONITOR_SEEDS = range(20_000, 20_100)
PROMPTS: tuple[str, ...] = ("a picture of", "a photo of", "an image of", "this is")
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CAPTION_WORDS: tuple[str, ...] = ("a", "an", "and", "on", "background")
DEFAULT_OUT = Path("captioner/models/shapes-blip")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights; recorded in the model card."""

    out: Path = DEFAULT_OUT
    steps: int = 2_400
    batch_size: int = 32
    learning_rate: float = 1.5e-3
    warmup_steps: int = 150
    seed: int = 0
    threads: int = 2
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 128
    intermediate_size: int = 256
    vision_layers: int = 3
    text_layers: int = 2
    patch_loss_weight: float = 1.0
    prompt_fraction: float = 0.4
    shift_fraction: float = 0.25
    max_shift: int = 6
    monitor_every: int = 250
    eval_singles: int = len(HELD_OUT_SINGLE_SEEDS)
    eval_pairs: int = len(HELD_OUT_PAIR_SEEDS)


def build_vocab() -> dict[str, int]:
    """Special tokens first, then every word a caption or a trained prompt can contain."""
    words = set(CAPTION_WORDS) | set(COLOURS) | set(SHAPES)
    for prompt in PROMPTS:
        words.update(prompt.split())
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *sorted(words)])}


def build_processor(image_size: int) -> BlipProcessor:
    # vocab= (not vocab_file=) is what gives a working WordPiece model with these words.
    tokenizer = BertTokenizerFast(vocab=build_vocab(), do_lower_case=True, padding_side="left")
    tokenizer.model_max_length = 64
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_config(settings: TrainSettings, tokenizer: BertTokenizerFast) -> BlipConfig:
    hidden = settings.hidden_size
    text_config = {
        "vocab_size": len(tokenizer.get_vocab()),
        "hidden_size": hidden,
        "encoder_hidden_size": hidden,
        "intermediate_size": settings.intermediate_size,
        "projection_dim": hidden,
        "num_hidden_layers": settings.text_layers,
        "num_attention_heads": 4,
        # Captions use < 25 positions; the spare ones keep long prompts or max_new_tokens from indexing past
        # the table (they are untrained, so what comes out there is noise, not a crash).
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": hidden,
        "intermediate_size": settings.intermediate_size,
        "projection_dim": hidden,
        "num_hidden_layers": settings.vision_layers,
        "num_attention_heads": 4,
        "image_size": settings.image_size,
        "patch_size": settings.patch_size,
        # BLIP's default (1e-10) starts position embeddings at zero; where a shape is matters for the caption order.
        "initializer_range": 0.02,
    }
    config = BlipConfig(text_config=text_config, vision_config=vision_config, projection_dim=hidden)
    config.architectures = ["BlipForConditionalGeneration"]
    return config


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """2D sine-cosine position table (row half, column half) with a zero row for the class token."""
    quarter = dim // 4
    frequencies = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coordinate in (rows.flatten(), columns.flatten()):
        angles = coordinate[:, None].double() * frequencies[None, :]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat([torch.zeros(1, 4 * quarter, dtype=torch.float64), torch.cat(parts, dim=1)])
    return table.float()


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


@dataclass(frozen=True)
class Batch:
    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    patch_labels: torch.Tensor


def patch_labels(scene: Scene, image_size: int, patch_size: int) -> np.ndarray:
    """Per patch, the shape covering most of it (0 = background), in the vision model's patch order."""
    grid = image_size // patch_size
    mask = np.asarray(shape_mask(scene, grid * patch_size), dtype=np.int64)
    counts = np.eye(len(SHAPES) + 1)[mask].reshape(grid, patch_size, grid, patch_size, -1).sum(axis=(1, 3))
    # Background must cover three quarters of a patch to win, so thin star points and cross arms get labels too.
    counts[..., 0] /= 3
    return counts.argmax(axis=-1).reshape(-1)


def training_batch(step: int, settings: TrainSettings, processor: BlipProcessor) -> Batch:
    """Batch ``step`` depends only on the step and the settings, never on what ran before."""
    tokenizer = processor.tokenizer
    images: list[Image.Image] = []
    rows: list[tuple[list[int], int, int]] = []  # token ids, prompt length, left shift
    patches: list[np.ndarray] = []
    for index in range(settings.batch_size):
        rng = random.Random(TRAIN_SEED_BASE + step * settings.batch_size + index)
        scene = random_scene(rng, max_shapes=2)
        # Varied source sizes so the model sees the resize artefacts of big and small inputs.
        images.append(draw(scene, rng.randint(settings.image_size, 3 * settings.image_size)))
        patches.append(patch_labels(scene, settings.image_size, settings.patch_size))
        prompt = rng.choice(PROMPTS) if rng.random() < settings.prompt_fraction else ""
        shift = rng.randint(1, settings.max_shift) if rng.random() < settings.shift_fraction else 0
        text = f"{prompt} {scene.caption}" if prompt else scene.caption
        prompt_length = len(tokenizer(prompt, add_special_tokens=False).input_ids) if prompt else 0
        rows.append((tokenizer(text).input_ids, prompt_length, shift))

    width = max(len(ids) + shift for ids, _, shift in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, (ids, prompt_length, shift) in enumerate(rows):
        # A shift puts masked padding before [CLS], as left padding does at inference; the tail is right padding,
        # which a causal decoder never attends to from real tokens.
        start, end = shift, shift + len(ids)
        input_ids[row, start:end] = torch.tensor(ids)
        attention_mask[row, start:end] = 1
        # Prompt tokens are given, not predicted (as in BLIP); [CLS] is never a target.
        labels[row, start + 1 + prompt_length : end] = torch.tensor(ids[1 + prompt_length :])
    pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return Batch(
        pixel_values=pixel_values,
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        patch_labels=torch.from_numpy(np.stack(patches)),
    )


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
    with torch.inference_mode():
        output = model.generate(**inputs, num_beams=num_beams, max_new_tokens=max_new_tokens)
    return [text.strip() for text in processor.batch_decode(output, skip_special_tokens=True)]


def _scene_for(seed: int, shapes: int) -> Scene:
    return random_scene(random.Random(seed), min_shapes=shapes, max_shapes=shapes)


def held_out_examples(seeds: Sequence[int], shapes: int, size: int = 96) -> list[tuple[Image.Image, Scene]]:
    """Held-out scenes with exactly ``shapes`` shapes; the seed ranges never overlap training seeds."""
    if shapes == 1:
        return [make_example(seed, max_shapes=1, size=size) for seed in seeds]
    return [(draw(scene, size), scene) for scene in (_scene_for(seed, shapes) for seed in seeds)]


def names_right_shape(text: str, scene: Scene) -> bool:
    """Whether the caption names every shape of the scene with its colour (order ignored)."""
    return all(f"{item.colour} {item.shape}" in text for item in scene.shapes)


def _accuracy(hits: Sequence[bool]) -> float:
    return round(sum(hits) / len(hits), 4) if hits else float("nan")


def evaluate(
    model: BlipForConditionalGeneration, processor: BlipProcessor, settings: TrainSettings, batch: int = 100
) -> dict[str, object]:
    """Held-out accuracy: exact captions, colour-and-shape naming, and prompted continuation."""
    model.eval()
    singles = held_out_examples(HELD_OUT_SINGLE_SEEDS[: settings.eval_singles], 1)
    pairs = held_out_examples(HELD_OUT_PAIR_SEEDS[: settings.eval_pairs], 2)
    results: dict[str, list[bool]] = {key: [] for key in ("single_exact", "single_named", "pair_exact", "pair_named")}
    prompted: dict[str, list[bool]] = {"left": [], "right": []}
    failures: list[dict[str, str]] = []
    for name, examples in (("single", singles), ("pair", pairs)):
        for first in range(0, len(examples), batch):
            chunk = examples[first : first + batch]
            texts = caption(model, processor, [image for image, _ in chunk])
            for text, (_, scene) in zip(texts, chunk, strict=True):
                results[f"{name}_exact"].append(text == scene.caption)
                results[f"{name}_named"].append(names_right_shape(text, scene))
                if text != scene.caption and len(failures) < 20:
                    failures.append({"expected": scene.caption, "got": text})
    # Mixed prompts in one batch, so this also checks the left-padded batched path.
    mixed = singles[:100] + pairs[:100]
    prompts = [PROMPTS[index % len(PROMPTS)] for index in range(len(mixed))]
    for side, hits in prompted.items():
        for first in range(0, len(mixed), batch):
            chunk, chunk_prompts = mixed[first : first + batch], prompts[first : first + batch]
            texts = caption(model, processor, [image for image, _ in chunk], chunk_prompts, padding_side=side)
            for text, prompt, (_, scene) in zip(texts, chunk_prompts, chunk, strict=True):
                hits.append(text == f"{prompt} {scene.caption}")
    all_exact = results["single_exact"] + results["pair_exact"]
    return {
        "held_out_seeds": {
            "single": [HELD_OUT_SINGLE_SEEDS.start, HELD_OUT_SINGLE_SEEDS.start + settings.eval_singles],
            "pair": [HELD_OUT_PAIR_SEEDS.start, HELD_OUT_PAIR_SEEDS.start + settings.eval_pairs],
            "training_from": TRAIN_SEED_BASE,
        },
        "images": {"single": len(singles), "pair": len(pairs), "prompted": len(prompted["left"])},
        "exact_caption_accuracy": _accuracy(all_exact),
        "single_shape_exact": _accuracy(results["single_exact"]),
        "single_shape_colour_and_shape": _accuracy(results["single_named"]),
        "two_shape_exact": _accuracy(results["pair_exact"]),
        "two_shape_both_named": _accuracy(results["pair_named"]),
        "prompted_exact": _accuracy(prompted["left"]),
        "prompted_exact_right_padded": _accuracy(prompted["right"]),
        "decoding": "greedy, max_new_tokens=20, batches of 100 at 96x96 source size",
        "first_failures": failures,
    }


def _monitor(model: BlipForConditionalGeneration, processor: BlipProcessor) -> dict[str, float]:
    model.eval()
    monitored = [_scene_for(seed, 1 + seed % 2) for seed in MONITOR_SEEDS]
    texts = caption(model, processor, [draw(scene, 96) for scene in monitored])
    return {
        "exact": _accuracy([text == scene.caption for text, scene in zip(texts, monitored, strict=True)]),
        "named": _accuracy([names_right_shape(text, scene) for text, scene in zip(texts, monitored, strict=True)]),
    }


def _learning_rate(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(settings: TrainSettings) -> tuple[BlipForConditionalGeneration, BlipProcessor, float]:
    seed_everything(settings.seed, settings.threads)
    processor = build_processor(settings.image_size)
    config = build_config(settings, processor.tokenizer)
    model = BlipForConditionalGeneration(config)
    # Start the vision position embeddings from a 2D grid layout instead of noise; they stay trainable.
    with torch.no_grad():
        grid = settings.image_size // settings.patch_size
        model.vision_model.embeddings.position_embedding.copy_(0.5 * sincos_positions(grid, settings.hidden_size))
    model.train()
    # Training-only head (never saved): naming every patch's shape gives the vision encoder dense supervision.
    # With the caption loss alone, colours were learned in a few hundred steps but shapes stayed near chance
    # for well over a thousand.
    patch_head = torch.nn.Linear(settings.hidden_size, len(SHAPES) + 1)
    trained = [*model.parameters(), *patch_head.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=0.01)
    parameters = sum(p.numel() for p in model.parameters())
    _LOGGER.info("training %d parameters for %d steps of %d", parameters, settings.steps, settings.batch_size)
    started = time.perf_counter()
    running_caption = running_patch = 0.0
    for step in range(settings.steps):
        batch = training_batch(step, settings, processor)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, settings)
        output = model(
            pixel_values=batch.pixel_values,
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
        )
        patch_logits = patch_head(output.last_hidden_state[:, 1:, :])
        patch_loss = torch.nn.functional.cross_entropy(patch_logits.flatten(0, 1), batch.patch_labels.flatten())
        loss = output.loss + settings.patch_loss_weight * patch_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        losses = (output.loss.item(), patch_loss.item())
        running_caption, running_patch = (
            (0.98 * running_caption + 0.02 * losses[0], 0.98 * running_patch + 0.02 * losses[1]) if step else losses
        )
        if step % 100 == 0 or step == settings.steps - 1:
            _LOGGER.info(
                "step %d caption loss %.4f patch loss %.4f (%.0f s)",
                step,
                running_caption,
                running_patch,
                time.perf_counter() - started,
            )
        if settings.monitor_every and step and step % settings.monitor_every == 0:
            _LOGGER.info("step %d monitor: %s", step, _monitor(model, processor))
            model.train()
    model.eval()
    return model, processor, time.perf_counter() - started


def _model_card(settings: TrainSettings, summary: dict[str, object], seconds: float, size_bytes: int) -> str:
    shape_colours = ", ".join(SHAPE_COLOURS)
    backgrounds = ", ".join(BACKGROUND_COLOURS)
    prompts = ", ".join(f'"{prompt}"' for prompt in PROMPTS)
    images = summary["images"]
    assert isinstance(images, dict)
    single_seeds = f"{HELD_OUT_SINGLE_SEEDS.start}-{HELD_OUT_SINGLE_SEEDS.start + settings.eval_singles - 1}"
    pair_seeds = f"{HELD_OUT_PAIR_SEEDS.start}-{HELD_OUT_PAIR_SEEDS.start + settings.eval_pairs - 1}"
    return f"""# shapes-blip

A tiny BLIP captioner (`BlipForConditionalGeneration`, {size_bytes / 1e6:.1f} MB of fp32 safetensors) trained from
scratch on synthetic pictures of one or two coloured shapes on a plain pale background. It is the captioner's
embedded default model: it loads through the ordinary `from_pretrained` path with no network and gives real
captions, so the server, its tests and the demo work anywhere.

Example captions: "a red circle on a white background", "a blue square and an orange star on a pink background".

## What it knows

- shape colours: {shape_colours}
- background colours: {backgrounds}
- shapes: {", ".join(SHAPES)}
- one or two shapes, named from left to right ("a X and a Y on a Z background")
- prompts are caption prefixes that generation continues, as in BLIP. Trained prompts: {prompts}; for example
  prompt "a picture of" gives "a picture of a red circle on a white background".

The scenes come from `captioner.training.shapes` (`make_example(seed)` draws the picture for a seed).

## What it is not

Not a general captioner. A photograph, a drawing, a dark background, a white shape or anything else outside these
shapes and colours still gets a caption in the same grammar, and that caption means nothing. Its vocabulary is
{len(build_vocab())} tokens; other words become `[UNK]`. It never saw overlapping shapes, textures, gradients or
more than two shapes.

## How it was trained

```
python -m captioner.training.train --out {settings.out} --steps {settings.steps} --seed {settings.seed}
```

- CPU only, {settings.threads} torch threads, `torch.use_deterministic_algorithms(True)`, fixed seeds: a second
  run gives bit-identical weights on the same machine and library versions.
- {settings.steps} steps of {settings.batch_size} freshly drawn scenes (half one shape, half two; drawn at
  {settings.image_size}-{3 * settings.image_size} px and resized to {settings.image_size} px by the processor), AdamW,
  learning rate {settings.learning_rate} with {settings.warmup_steps} warm-up steps and cosine decay.
- Loss: the BLIP caption loss plus, during training only, a per-patch shape loss from a linear head on the vision
  encoder (weight {settings.patch_loss_weight}); the head is not saved. Vision position embeddings start from a
  2D sine-cosine grid.
- {settings.prompt_fraction:.0%} of captions carry a prompt prefix, which is input but not a target (as in BLIP);
  {settings.shift_fraction:.0%} are shifted right by up to {settings.max_shift} masked padding tokens so that
  left-padded batches with different prompts caption correctly.
- Vision: ViT with {settings.vision_layers} layers, width {settings.hidden_size}, {settings.patch_size} px patches
  at {settings.image_size} px. Text decoder: {settings.text_layers} layers, width {settings.hidden_size}.
  `[CLS]` doubles as BLIP's `bos` token, so `forward` (used in training) and `generate` see the same first token.
- Training took {seconds / 60:.1f} minutes of wall time on a 2-core machine shared with other work.
- Training scenes come from seeds >= {TRAIN_SEED_BASE}. Held-out scenes: seeds {single_seeds} (one shape) and
  {pair_seeds} (two shapes).

## Held-out accuracy

Greedy decoding, source images 96 px; {images["single"]} one-shape and {images["pair"]} two-shape images, and
{images["prompted"]} of them again with prompts:

| measure | accuracy |
| --- | --- |
| exact caption, all held-out images | {summary["exact_caption_accuracy"]} |
| one shape: exact caption | {summary["single_shape_exact"]} |
| one shape: right colour and shape | {summary["single_shape_colour_and_shape"]} |
| two shapes: exact caption | {summary["two_shape_exact"]} |
| two shapes: both named with their colours | {summary["two_shape_both_named"]} |
| mixed prompts in one left-padded batch: exact | {summary["prompted_exact"]} |
| the same batch padded on the right: exact | {summary["prompted_exact_right_padded"]} |

Everything is in `eval.json`.

## Using it

```python
from transformers import BlipForConditionalGeneration, BlipProcessor

model = BlipForConditionalGeneration.from_pretrained("{settings.out}")
processor = BlipProcessor.from_pretrained("{settings.out}")
inputs = processor(images=image.convert("RGB"), text="a picture of", return_tensors="pt")
print(processor.batch_decode(model.generate(**inputs, max_new_tokens=20), skip_special_tokens=True))
```

Batches whose prompts differ in length need left padding, which the saved tokenizer uses: BLIP's `generate`
writes `bos` over the first column and drops the last one (the `[SEP]` the tokenizer appends), which is right for
every row only when rows are left-padded. Captions are at most 15 tokens; `max_new_tokens=20` is enough.
"""


def save(
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    settings: TrainSettings,
    summary: dict[str, object],
    seconds: float,
) -> None:
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # safetensors writes the file owner-only; a server running as another user must be able to read it.
    (out / "model.safetensors").chmod(0o644)
    size_bytes = (out / "model.safetensors").stat().st_size
    record = {**summary, "training": {**asdict(settings), "out": str(out), "seconds": round(seconds, 1)}}
    (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "README.md").write_text(_model_card(settings, summary, seconds, size_bytes))


def _parse_args(argv: Sequence[str] | None) -> TrainSettings:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=defaults.out, help="model directory to write")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="fixed so runs repeat exactly")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--patch-size", type=int, default=defaults.patch_size)
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument("--intermediate-size", type=int, default=defaults.intermediate_size)
    parser.add_argument("--vision-layers", type=int, default=defaults.vision_layers)
    parser.add_argument("--text-layers", type=int, default=defaults.text_layers)
    parser.add_argument("--patch-loss-weight", type=float, default=defaults.patch_loss_weight)
    parser.add_argument("--monitor-every", type=int, default=defaults.monitor_every, help="0 turns it off")
    parser.add_argument("--eval-singles", type=int, default=defaults.eval_singles)
    parser.add_argument("--eval-pairs", type=int, default=defaults.eval_pairs)
    args = parser.parse_args(argv)
    return TrainSettings(
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=min(defaults.warmup_steps, max(1, args.steps // 10)),
        seed=args.seed,
        threads=args.threads,
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        vision_layers=args.vision_layers,
        text_layers=args.text_layers,
        patch_loss_weight=args.patch_loss_weight,
        monitor_every=args.monitor_every,
        eval_singles=min(args.eval_singles, len(HELD_OUT_SINGLE_SEEDS)),
        eval_pairs=min(args.eval_pairs, len(HELD_OUT_PAIR_SEEDS)),
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _parse_args(argv)
    model, processor, seconds = train(settings)
    summary = evaluate(model, processor, settings)
    save(model, processor, settings, summary, seconds)
    print(json.dumps({key: value for key, value in summary.items() if key != "first_failures"}, indent=2))


if __name__ == "__main__":
    main()
