"""What a training run leaves in the model directory: the weights, the processor, ``eval.json`` and the model card.

The card (``README.md``) says what the model knows and does not, how it was trained (from the settings) and its
held-out accuracy (from the evaluation).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from transformers import BlipForConditionalGeneration, BlipProcessor

from captioner.training.model import build_vocab
from captioner.training.settings import (
    HELD_OUT_PAIR_SEEDS,
    HELD_OUT_SINGLE_SEEDS,
    PROMPTS,
    TRAIN_SEED_BASE,
    TrainSettings,
)
from captioner.training.shapes import BACKGROUND_COLOURS, SHAPE_COLOURS, SHAPES

# str.format fields: the run's settings, its evaluation summary, and the values model_card() works out.
_CARD = """# shapes-blip

A tiny BLIP captioner (`BlipForConditionalGeneration`, {size_mb:.1f} MB of fp32 safetensors) trained from
scratch on synthetic pictures of one or two coloured shapes on a plain pale background. It is the captioner's
embedded default model: it loads through the ordinary `from_pretrained` path with no network and gives real
captions, so the server, its tests and the demo work anywhere.

Example captions: "a red circle on a white background", "a blue square and an orange star on a pink background".

## What it knows

- shape colours: {shape_colours}
- background colours: {backgrounds}
- shapes: {shapes}
- one or two shapes, named from left to right ("a X and a Y on a Z background")
- prompts are caption prefixes that generation continues, as in BLIP. Trained prompts: {prompts}; for example
  prompt "a picture of" gives "a picture of a red circle on a white background".

The scenes come from `captioner.training.shapes` (`make_example(seed)` draws the picture for a seed).

## What it is not

Not a general captioner. A photograph, a drawing, a dark background, a white shape or anything else outside these
shapes and colours still gets a caption in the same grammar, and that caption means nothing. Its vocabulary is
{vocab_size} tokens; other words become `[UNK]`. It never saw overlapping shapes, textures, gradients or
more than two shapes.

## How it was trained

```
python -m captioner.training.train --out {settings.out} --steps {settings.steps} --seed {settings.seed}
```

- CPU only, {settings.threads} torch threads, `torch.use_deterministic_algorithms(True)`, fixed seeds: a second
  run gives bit-identical weights on the same machine and library versions.
- {settings.steps} steps of {settings.batch_size} freshly drawn scenes (half one shape, half two; drawn at
  {settings.image_size}-{max_source_px} px and resized to {settings.image_size} px by the processor), AdamW,
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
- Training took {minutes:.1f} minutes of wall time on a 2-core machine shared with other work.
- Training scenes come from seeds >= {train_seed_base}. Held-out scenes: seeds {single_seeds} (one shape) and
  {pair_seeds} (two shapes).

## Held-out accuracy

Greedy decoding, source images 96 px; {images[single]} one-shape and {images[pair]} two-shape images, and
{images[prompted]} of them again with prompts:

| measure | accuracy |
| --- | --- |
| exact caption, all held-out images | {summary[exact_caption_accuracy]} |
| one shape: exact caption | {summary[single_shape_exact]} |
| one shape: right colour and shape | {summary[single_shape_colour_and_shape]} |
| two shapes: exact caption | {summary[two_shape_exact]} |
| two shapes: both named with their colours | {summary[two_shape_both_named]} |
| mixed prompts in one left-padded batch: exact | {summary[prompted_exact]} |
| the same batch padded on the right: exact | {summary[prompted_exact_right_padded]} |

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


def model_card(settings: TrainSettings, summary: dict[str, object], seconds: float, size_bytes: int) -> str:
    """The model card for a run: its settings, its held-out accuracy ``summary``, its time and weights' size."""
    single_end = HELD_OUT_SINGLE_SEEDS.start + settings.eval_singles - 1
    pair_end = HELD_OUT_PAIR_SEEDS.start + settings.eval_pairs - 1
    return _CARD.format(
        settings=settings,
        summary=summary,
        images=summary["images"],
        size_mb=size_bytes / 1e6,
        minutes=seconds / 60,
        shape_colours=", ".join(SHAPE_COLOURS),
        backgrounds=", ".join(BACKGROUND_COLOURS),
        shapes=", ".join(SHAPES),
        prompts=", ".join(f'"{prompt}"' for prompt in PROMPTS),
        vocab_size=len(build_vocab()),
        max_source_px=3 * settings.image_size,
        train_seed_base=TRAIN_SEED_BASE,
        single_seeds=f"{HELD_OUT_SINGLE_SEEDS.start}-{single_end}",
        pair_seeds=f"{HELD_OUT_PAIR_SEEDS.start}-{pair_end}",
    )


def save(
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    settings: TrainSettings,
    summary: dict[str, object],
    seconds: float,
) -> None:
    """Write the model, its processor, ``eval.json`` (the summary and the settings) and the card to ``settings.out``."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # safetensors writes the file owner-only; a server running as another user must be able to read it.
    (out / "model.safetensors").chmod(0o644)
    size_bytes = (out / "model.safetensors").stat().st_size
    record = {**summary, "training": {**asdict(settings), "out": str(out), "seconds": round(seconds, 1)}}
    (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "README.md").write_text(model_card(settings, summary, seconds, size_bytes))
