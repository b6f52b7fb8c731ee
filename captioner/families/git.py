"""GIT (microsoft/git-base-coco, git-large-coco): image tokens followed by a BERT-like text decoder in one
transformer.

Generation continues the text row [CLS] + caption prefix; the output repeats it. The image tokens are prepended
inside the model and take no text positions, so the budget counts only the text row. Rows are left-padded: the
model derives text positions from the attention mask, so a batch of mixed prompts gives each its one-by-one caption.
"""

from __future__ import annotations

import torch
from PIL import Image

from captioner.families.base import Captioner, left_pad


class GitCaptioner(Captioner):
    family = "git"
    model_types = ("git",)

    def _row(self, prompt: str) -> list[int]:
        return [self.tokenizer.cls_token_id, *self.tokenizer(prompt, add_special_tokens=False).input_ids]

    def start_tokens(self, prompt: str) -> int:
        return len(self._row(prompt))

    def inputs(self, images: list[Image.Image], prompts: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = left_pad([self._row(prompt) for prompt in prompts], self.tokenizer.pad_token_id)
        return {"pixel_values": self.pixels(images), "input_ids": ids, "attention_mask": mask}


FAMILY = GitCaptioner
