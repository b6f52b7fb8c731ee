"""The optional safety checker: diffusers' StableDiffusionSafetyChecker run on the conditioning image.

SVD has no safety checker of its own. Like the reference deployments, we screen the *input* image (a video
generated from an image stays close to it) with the Stable Diffusion safety checker
(``CompVis/stable-diffusion-safety-checker`` or a local directory holding its model and CLIP image processor),
configured with ``--safety-checker``. Without one, results say that no check ran (``safety_checked=false``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from imagewire_serving.device import dtype_name

_LOGGER = logging.getLogger(__name__)


class SafetyChecker:
    """Flags images close to the checker's unsafe concepts. ``check`` blocks; run it on the device worker."""

    def __init__(self, model: torch.nn.Module, processor: object, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, source: str, device: torch.device, dtype: torch.dtype) -> SafetyChecker:
        """Load the checker and its image processor through from_pretrained."""
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        processor = CLIPImageProcessor.from_pretrained(source)
        # transformers wraps PreTrainedModel.to with functools.wraps, which mypy does not bind as a method.
        model = StableDiffusionSafetyChecker.from_pretrained(source, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
        _LOGGER.info("loaded safety checker %s on %s (%s)", source, device, dtype_name(dtype))
        return cls(model, processor, device, dtype)

    @torch.no_grad()
    def check(self, image: Image.Image) -> bool:
        """True when the image is flagged."""
        # transformers types the processor's __call__ through a decorator mypy cannot call through.
        pixels = self.processor(images=[image], return_tensors="pt").pixel_values  # type: ignore[operator]
        # The checker blanks flagged images in place; we only need the verdict, so give it a 1-pixel stand-in.
        _, flagged = self.model(clip_input=pixels.to(self.device, self.dtype), images=np.zeros((1, 1, 1, 3)))
        return bool(flagged[0])
