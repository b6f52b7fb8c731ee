"""What decides a training run of the embedded video model: the settings recorded in its model card, the seed
ranges, the architecture and the request defaults it is served with.

Seeds: training scenes come from seeds ``>= TRAIN_SEED_BASE``; evaluation uses ``HELD_OUT_SEEDS``, tests use
``TEST_SEEDS``: disjoint ranges, so nothing is tuned on the held-out scenes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from animator.tiny.svd import SvdPreset
from animator.training.motion import SERVED_FPS, SERVED_FRAMES

TRAIN_SEED_BASE = 1_000_000
HELD_OUT_SEEDS = range(0, 1_000)
TEST_SEEDS = range(50_000, 50_100)
DEFAULT_OUT = Path("animator/models/shapes-svd")
# What the training command leaves next to the weights: its settings, steps done and times.
TRAINING_RECORD = "training.json"

# The architecture: the SVD pipeline's components at a tiny size. 64x64 frames through a four-level VAE (the real
# model's scale factor of 8) give 8x8 latents; the UNet has two levels (8x8 and 4x4) with spatial and temporal
# attention; the CLIP image encoder sees the 224x224 image the pipeline always makes.
# The VAE's first and last levels are 64 wide: its encoder and decoder end in GroupNorm with 32 groups, which with
# 32 channels is one channel per group and removes each channel's mean over the picture. A flat background's colour
# is such a mean; with 32 channels there, a VAE trained for a few hundred steps decoded every background in the
# same beige and every shape in the same dark grey. Two channels per group can keep their difference, but within
# this budget the shipped VAE did not learn colours either (the model card says what was tried).
PRESET = SvdPreset(
    unet_channels=(64, 64), unet_heads=(2, 2), unet_layers_per_block=1, time_embed_dim=32,
    vae_channels=(64, 32, 32, 64), vae_layers_per_block=1,
    clip_hidden=64, clip_layers=2, clip_heads=2, clip_patch=32,
    num_frames=SERVED_FRAMES, default_width=64, default_height=64, default_steps=4, default_decode_chunk_size=8,
)
# The request defaults besides the preset's: the SVD pipeline's own noise augmentation and motion bucket,
# the trained frame rate (8 frames at 7 fps: one second), and no classifier-free guidance. The model was never
# trained without its image, so guidance above 1 would mix in an untrained prediction.
SERVED_DEFAULTS = {
    "fps": SERVED_FPS,
    "motion_bucket_id": 127,
    "noise_aug_strength": 0.02,
    "min_guidance_scale": 1.0,
    "max_guidance_scale": 1.0,
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights; recorded in the model card."""

    out: Path = DEFAULT_OUT
    seed: int = 0
    threads: int = 2
    # Stage 1, the VAE: reconstruction of whole clips (the temporal decoder mixes neighbouring frames).
    vae_steps: int = 2_000
    vae_clips: int = 1
    vae_learning_rate: float = 2e-3
    # Stage 2, the UNet and the image encoder, on latents of ``clips`` clips encoded once by the trained VAE.
    clips: int = 2_000
    unet_steps: int = 2_400
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    # Weight of the auxiliary loss: a linear probe on the image embedding predicts the kind's direction.
    direction_weight: float = 0.1
    # Noise augmentation strengths drawn in training: the served default half the time, else uniform up to this.
    max_noise_aug: float = 0.1
    # Share of UNet steps at the served schedule's noise levels (the rest log-uniform between the two below).
    schedule_share: float = 0.5
    min_sigma: float = 0.02
    max_sigma: float = 700.0
    checkpoint_every: int = 100
