"""Previews while a video is denoised: a few frames of the current estimate of the clean latents, projected to RGB
by a fixed linear map instead of the VAE, encoded as a small animated WebP.

The map (the latent channels and a bias -> RGB) is fitted once per model, when it loads, to the model's own VAE
through its family's :data:`LatentCodec` (SVD's 4 scaled channels, LTX-Video's 128 and Wan's 16 normalised
ones): a few smooth colour images are encoded, their latents decoded, and the decoded pixels (averaged down to the
latent grid) regressed on the latents by least squares. For SVD's real VAE this recovers the kind of fixed 4x3 matrix
previewers hard-code for Stable Diffusion latents; for a random test model it finds whatever linear relation its
VAE has, where hard-coded coefficients would mean nothing. Projecting costs one small matrix product per preview
frame, against a VAE decode (the real decoder on even one downscaled frame) that would cost a sizeable part of a
denoising step.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from PIL import Image

_LOGGER = logging.getLogger(__name__)

MIME_TYPE = "image/webp"
# Frames per preview, spread over the video; the longer side is scaled up (by a whole factor) to about this.
PREVIEW_FRAMES = 4
PREVIEW_SIDE = 256
# Fastest WebP effort: a preview is looked at for a second, then replaced.
_WEBP = {"quality": 60, "method": 0}


# How a family's VAE maps images to latents as its denoiser holds them (scaled or normalised), and back: images
# (n, 3, size, size) in [-1, 1] -> latents (n, channels, h, w) -> images. Single images, for video VAEs too.
LatentCodec = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


class LatentProjection:
    """An affine map from latent channels to RGB in [-1, 1], fitted to one model's VAE (see the module docstring).

    ``weights`` is (channels + 1, 3), the last row the bias; ``fit_r2`` the share of the decoded pixels' variance
    the map explains on the calibration images.
    """

    def __init__(self, weights: torch.Tensor, fit_r2: float) -> None:
        self.weights = weights
        self.fit_r2 = fit_r2

    @classmethod
    @torch.no_grad()
    def fit(cls, codec: LatentCodec, device: torch.device, dtype: torch.dtype, *, count: int = 6, size: int = 128,
            seed: int = 0) -> LatentProjection:
        """Fit the map to a model's VAE, through ``codec``, on ``count`` seeded calibration images of ``size``
        pixels square (enough latent pixels for the channels: a VAE that downsamples by 32 needs larger ones)."""
        encode, decode = codec
        images = calibration_images(count, size, seed)
        latents = encode(images.to(device, dtype))
        # One image at a time: a temporal decoder would otherwise mix unrelated images as frames of one video.
        decoded = torch.cat([decode(latent[None]) for latent in latents]).float()
        pixels = F.avg_pool2d(decoded, decoded.shape[-1] // latents.shape[-1]).cpu()
        inputs = latents.float().cpu().permute(0, 2, 3, 1).flatten(0, 2)
        inputs = torch.cat([inputs, torch.ones(len(inputs), 1)], dim=1)
        targets = pixels.permute(0, 2, 3, 1).flatten(0, 2)
        weights = torch.linalg.lstsq(inputs, targets).solution
        residual = (inputs @ weights - targets).square().sum()
        r2 = float(1 - residual / (targets - targets.mean(0)).square().sum())
        _LOGGER.info("latent preview projection fitted (R^2 %.3f on %d calibration images)", r2, count)
        return cls(weights, r2)

    @torch.no_grad()
    def frames(self, latents: torch.Tensor, count: int = PREVIEW_FRAMES) -> np.ndarray:
        """``count`` frames spread over ``latents`` (frames, channels, h, w) as uint8 RGB, (count, h, w, 3)."""
        picks = torch.linspace(0, latents.shape[0] - 1, min(count, latents.shape[0])).round().long()
        chosen = latents[picks.to(latents.device)].float()
        weights = self.weights.to(chosen.device)
        rgb = torch.einsum("fchw,cd->fhwd", chosen, weights[:-1]) + weights[-1]
        return ((rgb / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def calibration_images(count: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random colour fields in [-1, 1], (count, 3, size, size): colours across the gamut, few edges."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp(-1, 1)


def encode(frames: np.ndarray, *, fps: int, num_frames: int) -> tuple[bytes, int, int]:
    """Frames at latent resolution as an animated WebP scaled up by a whole factor (the video's aspect ratio kept
    exactly), each shown for its share of the video's duration; returns the bytes, width and height."""
    height, width = frames.shape[1:3]
    factor = max(1, PREVIEW_SIDE // max(width, height))
    size = (width * factor, height * factor)
    images = [Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR) for frame in frames]
    duration_ms = max(1, round(1000 * num_frames / fps / len(images)))
    buffer = io.BytesIO()
    images[0].save(buffer, "WEBP", save_all=True, append_images=images[1:], duration=duration_ms, loop=0, **_WEBP)
    return buffer.getvalue(), size[0], size[1]
