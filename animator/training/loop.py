"""The two training stages, seeded and deterministic: the VAE on clips, then the UNet and the image encoder on
latents, with the training objective of the pipeline's sampler.

The objective: SVD's EulerDiscreteScheduler is an EDM sampler with v-prediction. At noise level ``sigma`` the
UNet sees ``x / sqrt(sigma^2 + 1)`` (``scale_model_input``) with the conditioning latents concatenated on the
channels, the timestep ``0.25 * log(sigma)`` (``timestep_type="continuous"``), and the scheduler reads its output
``F`` as ``x0 = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * F``. Solving for ``F`` with ``x = x0 + sigma * n``
gives the target ``(n - sigma * x0) / sqrt(sigma^2 + 1)``; a plain mean squared error on it is EDM's weighting.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from animator.training.data import LatentSet, pixels, training_clip
from animator.training.settings import PRESET, TrainSettings

_LOGGER = logging.getLogger(__name__)

# Clips for the VAE come after the UNet's in the training seeds, so the two stages see different scenes.
_VAE_CLIP_OFFSET = 500_000


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def train_vae(pipeline: Any, settings: TrainSettings) -> float:
    """Stage 1: the VAE learns to reconstruct whole clips (decoded ``num_frames`` at a time, as the served decode
    chunk is). Returns the final smoothed PSNR; sets ``scaling_factor`` so the latents have unit variance."""
    vae = pipeline.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_learning_rate, weight_decay=0.0)
    psnr = 0.0
    started = time.perf_counter()
    for step in range(settings.vae_steps):
        first = _VAE_CLIP_OFFSET + step * settings.vae_clips
        frames = pixels(pipeline, [f for i in range(settings.vae_clips) for f in training_clip(first + i)[0]])
        rate = learning_rate(step, settings.vae_steps, settings.vae_learning_rate, settings.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        decoded = vae.decode(vae.encode(frames).latent_dist.mode(), num_frames=PRESET.num_frames).sample
        loss = torch.nn.functional.mse_loss(decoded, frames)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        # Pixels span 2 (from -1 to 1), so the peak signal's square is 4.
        value = 10 * math.log10(4 / max(loss.item(), 1e-10))
        psnr = value if step == 0 else 0.95 * psnr + 0.05 * value
        if step % 25 == 0 or step == settings.vae_steps - 1:
            _LOGGER.info("vae step %d psnr %.2f dB (%.0f s)", step, psnr, time.perf_counter() - started)
    vae.eval()
    with torch.no_grad():
        sample = pixels(pipeline, [f for i in range(16) for f in training_clip(i)[0]])
        spread = vae.encode(sample).latent_dist.mode().std().item()
    vae.register_to_config(scaling_factor=1.0 / spread)
    return psnr


def schedule_sigmas(pipeline: Any, steps: int) -> torch.Tensor:
    """The noise levels the served schedule evaluates the UNet at (the last, sigma_min, barely changes the
    sample and is left out)."""
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(steps)
    sigmas: torch.Tensor = scheduler.sigmas[:-1][:-1].clone().float()
    return sigmas


def sample_sigmas(count: int, served: torch.Tensor, settings: TrainSettings, rng: torch.Generator) -> torch.Tensor:
    """Noise levels for a batch: the served schedule's for ``schedule_share`` of it, else log-uniform."""
    low, high = math.log(settings.min_sigma), math.log(settings.max_sigma)
    spread = torch.exp(low + (high - low) * torch.rand(count, generator=rng))
    pick = served[torch.randint(len(served), (count,), generator=rng)]
    return torch.where(torch.rand(count, generator=rng) < settings.schedule_share, pick, spread)


def train_unet(pipeline: Any, data: LatentSet, settings: TrainSettings,
               checkpoint: Callable[[int], None]) -> float:
    """Stage 2: the UNet and the image encoder together. Returns the final smoothed loss."""
    unet, encoder = pipeline.unet.train(), pipeline.image_encoder.train()
    # The auxiliary probe: a linear map from the image embedding to the shape kind's direction, trained with the
    # rest and then discarded. Without it the encoder learns the kind only through the denoising loss, slowly.
    probe = torch.nn.Linear(encoder.config.projection_dim, 2)
    trained = [*unet.parameters(), *encoder.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=0.01)
    served = schedule_sigmas(pipeline, PRESET.default_steps)
    rng = torch.Generator().manual_seed(settings.seed + 1)
    clips = data.latents.shape[0]
    running = 0.0
    started = time.perf_counter()
    for step in range(settings.unet_steps):
        index = torch.randint(clips, (settings.batch_size,), generator=rng)
        x0 = data.latents[index]
        frames = x0.shape[1]
        condition = data.conditions[index].unsqueeze(1).repeat(1, frames, 1, 1, 1)
        sigma = sample_sigmas(len(index), served, settings, rng).view(-1, 1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=rng)
        scale = (sigma**2 + 1).sqrt()
        model_input = torch.cat([(x0 + sigma * noise) / scale, condition], dim=2)
        # The pipeline's own image path: resize to 224 with antialiasing, normalize, encode, one token per image.
        embeddings = pipeline._encode_image([data.first_frames[i] for i in index.tolist()], "cpu", 1, False)
        rate = learning_rate(step, settings.unet_steps, settings.learning_rate, settings.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        output = unet(model_input, 0.25 * sigma.flatten().log(), encoder_hidden_states=embeddings,
                      added_time_ids=data.time_ids[index]).sample
        loss = torch.nn.functional.mse_loss(output, (noise - sigma * x0) / scale)
        if settings.direction_weight:
            guess = probe(embeddings[:, 0])
            loss = loss + settings.direction_weight * torch.nn.functional.mse_loss(guess, data.directions[index])
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        running = loss.item() if step == 0 else 0.97 * running + 0.03 * loss.item()
        if step % 25 == 0 or step == settings.unet_steps - 1:
            _LOGGER.info("unet step %d loss %.4f (%.0f s)", step, running, time.perf_counter() - started)
        if settings.checkpoint_every and step and step % settings.checkpoint_every == 0:
            unet.eval(), encoder.eval()
            checkpoint(step)
            unet.train(), encoder.train()
    unet.eval(), encoder.eval()
    return running
