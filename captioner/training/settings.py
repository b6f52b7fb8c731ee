"""What decides a training run: the settings recorded in the model card, the seed ranges, the trained prompts.

Seeds: training scenes come from seeds ``>= TRAIN_SEED_BASE``; evaluation uses the disjoint held-out ranges
``HELD_OUT_SINGLE_SEEDS`` (one shape) and ``HELD_OUT_PAIR_SEEDS`` (two shapes), all below 10_000.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAIN_SEED_BASE = 1_000_000
HELD_OUT_SINGLE_SEEDS = range(0, 1_000)
HELD_OUT_PAIR_SEEDS = range(5_000, 6_000)
# Progress checks during training use their own seeds, so nothing about training is tuned on the held-out set.
MONITOR_SEEDS = range(20_000, 20_100)
PROMPTS: tuple[str, ...] = ("a picture of", "a photo of", "an image of", "this is")
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
