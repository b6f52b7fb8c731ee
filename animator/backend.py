"""The video model behind a small protocol, which the engine and the generation loop use; each model family
(:mod:`animator.families`) implements it over one diffusers pipeline.

A backend splits the pipeline call in two so that video can be encoded while it is decoded: ``denoise`` runs the
pipeline itself with ``output_type="latent"`` (conditioning and the denoising loop, with a per-step callback), and
``decode`` turns the latents into uint8 frames chunk by chunk, as the pipeline's own decode would. Each step
reports the scheduler's current estimate of the clean latents, from which :mod:`animator.preview` draws a preview
at a fraction of a step's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from animator.params import GenerationParams, ModelFields
from imagewire_serving.engine import Backend
from imagewire_serving.errors import FieldViolation


@dataclass(frozen=True)
class Step:
    """A finished denoising step."""

    done: int
    total: int
    # The scheduler's current estimate of the clean latents, (frames, channels, h, w); None when it gives none.
    # (For a video VAE that compresses time, the frames are latent frames.)
    denoised: torch.Tensor | None = None


# Called after each denoising step; it may raise to stop the loop.
StepCallback = Callable[[Step], None]


class VideoBackend(Backend, Protocol):
    """A loaded image-to-video model. All methods block and run on the engine's device worker thread."""

    # What the model accepts: its fields, defaults and grids (see animator.params.ModelFields).
    accepts: ModelFields

    def violations(self, params: GenerationParams) -> list[FieldViolation]:
        """What the model cannot take in resolved parameters beyond the fields' bounds (a prompt over its token
        limit); empty when it can run them."""
        ...

    def denoise(self, image: Image.Image, params: GenerationParams, on_step: StepCallback,
                noise: torch.Generator | None = None) -> torch.Tensor:
        """Encode the image and run the denoising loop; returns the final latents. Random draws come from
        ``noise`` (a video's segments continue one generator), else from a new generator seeded with
        ``params.seed``."""
        ...

    def decode(self, latents: torch.Tensor, params: GenerationParams) -> Generator[np.ndarray, None, None]:
        """Decode latents to frames, yielding uint8 RGB arrays of shape (n, height, width, 3) chunk by chunk, the
        first chunk before the last frame is decoded when decode_chunk_size is below num_frames."""
        ...

    def preview_frames(self, denoised: torch.Tensor) -> np.ndarray:
        """A few frames of a step's ``denoised`` latents, approximated cheaply: uint8 RGB (n, h, w, 3) at the latent
        resolution."""
        ...


def generator(seed: int) -> torch.Generator:
    """A CPU generator: the initial noise then depends only on the seed, not on the device."""
    return torch.Generator(device="cpu").manual_seed(seed)
