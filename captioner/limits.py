"""The captioner's operator-set bounds and defaults: declared once, checked on construction, each also a flag."""

from __future__ import annotations

from dataclasses import dataclass

from imagewire_serving.config import Config, option
from imagewire_serving.images import MAX_IMAGE_PIXELS, ImageLimits

MAX_PROMPT_CHARS = 512


@dataclass(frozen=True)
class EngineLimits(Config):
    """Bounds on what a caption request may ask for, the batching policy and the price."""

    max_image_pixels: int = option(MAX_IMAGE_PIXELS, "largest decoded image, in pixels", minimum=1)
    # None: what each model's generation config says (transformers' 20 new tokens when it says nothing).
    default_max_new_tokens: int | None = option(
        None, "caption length default, in tokens (default: the model's generation config)", minimum=1)
    max_new_tokens_limit: int = option(128, "largest max_new_tokens (the model's text length may lower it)",
                                       minimum=1)
    default_num_beams: int | None = option(
        None, "beam width default, 1 = greedy (default: the model's generation config)", minimum=1)
    num_beams_limit: int = option(8, "largest num_beams", minimum=1)
    max_batch_size: int = option(16, "most requests run together", minimum=1)
    max_batch_delay_ms: float = option(5.0, "longest wait for a batch to fill, when callers are concurrent",
                                       minimum=0)
    max_queue: int = option(256, "waiting requests before RESOURCE_EXHAUSTED", minimum=1)
    usd_per_input_pixel: float = option(2.5e-10, "price of one input pixel, in US dollars", minimum=0)

    def check(self) -> None:
        if self.default_max_new_tokens is not None and self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("--default-max-new-tokens must be within 1..--max-new-tokens-limit")
        if self.default_num_beams is not None and self.default_num_beams > self.num_beams_limit:
            raise ValueError("--default-num-beams must be within 1..--num-beams-limit")

    @property
    def image(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels)
