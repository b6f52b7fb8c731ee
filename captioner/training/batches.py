"""Training batches: freshly drawn scenes, their captions as token ids and labels, and per-patch shape labels.

Batch ``step`` depends only on the step and the settings, so a run can be repeated (and resumed) exactly. Some
captions are shifted right by masked padding, as left padding does at inference, so the learned absolute
positions cope with a batch of prompts of different lengths.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import BlipProcessor

from captioner.training.settings import PROMPTS, TRAIN_SEED_BASE, TrainSettings
from captioner.training.shapes import SHAPES, Scene, draw, random_scene, shape_mask


@dataclass(frozen=True)
class Batch:
    """One training step's tensors: images, token ids and mask, caption labels (-100 = no loss), patch labels."""

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
    input_ids, attention_mask, labels = _text_tensors(rows, tokenizer.pad_token_id)
    pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return Batch(
        pixel_values=pixel_values,
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        patch_labels=torch.from_numpy(np.stack(patches)),
    )


def _text_tensors(rows: list[tuple[list[int], int, int]], pad_token_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, attention mask and labels for rows of (token ids, prompt length, left shift)."""
    width = max(len(ids) + shift for ids, _, shift in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
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
    return input_ids, attention_mask, labels
