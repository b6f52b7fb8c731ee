"""Training data for the video model: clips drawn by :mod:`animator.training.motion`, turned into tensors by the
pipeline's own image processing, and the UNet's training set of latents encoded once by the trained VAE."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from animator.training.motion import DIRECTIONS, MAX_FPS, MIN_FPS, Motion, clip, moving_scene
from animator.training.settings import PRESET, SERVED_DEFAULTS, TRAIN_SEED_BASE, TrainSettings


def random_motion(rng: random.Random, num_frames: int) -> Motion:
    """A motion bucket in 0..255 (still a seventh of the time), and the served frame rate half the time."""
    bucket = 0 if rng.random() < 1 / 7 else rng.randint(1, 255)
    fps = int(SERVED_DEFAULTS["fps"]) if rng.random() < 0.5 else rng.randint(MIN_FPS, MAX_FPS)
    return Motion(bucket, fps, num_frames)


def noise_aug_strength(rng: random.Random, settings: TrainSettings) -> float:
    """The served default half the time, else uniform in [0, max_noise_aug]."""
    served = float(SERVED_DEFAULTS["noise_aug_strength"])
    return served if rng.random() < 0.5 else rng.uniform(0, settings.max_noise_aug)


def training_clip(index: int) -> tuple[list[Image.Image], Motion]:
    """Training clip ``index``: its own seed, so any subset can be drawn again alone."""
    frames, motion, _ = training_clip_and_direction(index)
    return frames, motion


def training_clip_and_direction(index: int) -> tuple[list[Image.Image], Motion, tuple[float, float]]:
    """Training clip ``index`` and its shape kind's direction (the unit vector of ``motion.DIRECTIONS``)."""
    rng = random.Random(TRAIN_SEED_BASE + index)
    motion = random_motion(rng, PRESET.num_frames)
    scene = moving_scene(rng, motion)
    return clip(scene, motion, PRESET.default_width), motion, DIRECTIONS[scene.shapes[0].shape]


def pixels(pipeline: Any, frames: list[Image.Image]) -> torch.Tensor:
    """Frames as the pipeline gives them to the VAE: (n, 3, h, w) in [-1, 1]."""
    prepared: torch.Tensor = pipeline.video_processor.preprocess(frames, height=PRESET.default_height,
                                                                 width=PRESET.default_width)
    return prepared


@dataclass
class LatentSet:
    """The UNet's training set: per clip, its frames' latents (scaled, as the denoiser holds them), the
    conditioning latents of its noise-augmented first frame (unscaled, as the pipeline makes them), the first
    frame itself (for the image encoder) and its added time ids."""

    latents: torch.Tensor  # (clips, frames, channels, h, w)
    conditions: torch.Tensor  # (clips, channels, h, w)
    first_frames: list[Image.Image]
    time_ids: torch.Tensor  # (clips, 3): fps, motion_bucket_id, noise_aug_strength (_get_add_time_ids' order)
    directions: torch.Tensor  # (clips, 2): the shape kind's direction, the auxiliary target of the image encoder


@torch.no_grad()
def encode_clips(pipeline: Any, settings: TrainSettings, chunk: int = 32) -> LatentSet:
    """Draw ``settings.clips`` clips and encode them with the pipeline's VAE (``vae.encode(...).mode()``, as
    ``_encode_vae_image`` does); each clip's noise augmentation is drawn once."""
    vae = pipeline.vae
    rng = random.Random(settings.seed)
    noise = torch.Generator().manual_seed(settings.seed)
    latents, conditions, first_frames, time_ids, directions = [], [], [], [], []
    for start in range(0, settings.clips, chunk):
        drawn = [training_clip_and_direction(index) for index in range(start, min(settings.clips, start + chunk))]
        clips = [(video, motion) for video, motion, _ in drawn]
        directions += [direction for _, _, direction in drawn]
        frames = pixels(pipeline, [frame for video, _ in clips for frame in video])
        encoded = vae.encode(frames).latent_dist.mode() * vae.config.scaling_factor
        latents.append(encoded.unflatten(0, (len(clips), -1)))
        first = frames[:: PRESET.num_frames]
        strengths = [noise_aug_strength(rng, settings) for _ in clips]
        augmented = first + torch.tensor(strengths).view(-1, 1, 1, 1) * torch.randn(first.shape, generator=noise)
        conditions.append(vae.encode(augmented).latent_dist.mode())
        first_frames += [video[0] for video, _ in clips]
        time_ids += [[m.fps, m.motion_bucket_id, s] for (_, m), s in zip(clips, strengths, strict=True)]
    return LatentSet(torch.cat(latents), torch.cat(conditions), first_frames, torch.tensor(time_ids),
                     torch.tensor(directions))
