"""Florence-2 (florence-community/Florence-2-base, -large and their -ft versions): an encoder-decoder driven by
task prompts.

Every caption is the answer to the ``<CAPTION>`` task (the processor turns it into "What does the image
describe?"), so every row of a batch is the same length and no padding is needed. The model answers a task: it
takes no caption prefix, so ``prompt`` is not among its fields. The decoder starts from its start token alone.
"""

from __future__ import annotations

import torch
from PIL import Image

from captioner.families.base import ALL_FIELDS, Captioner

TASK = "<CAPTION>"


class Florence2Captioner(Captioner):
    family = "florence2"
    model_types = ("florence2",)
    fields_used = ALL_FIELDS - {"prompt"}

    def start_tokens(self, prompt: str) -> int:
        return 1  # the decoder start token; the task prompt goes to the encoder

    def inputs(self, images: list[Image.Image], prompts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.processor(images=images, text=[TASK] * len(images), return_tensors="pt")
        return {name: encoded[name] for name in ("input_ids", "attention_mask", "pixel_values")}


FAMILY = Florence2Captioner
