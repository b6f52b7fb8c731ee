"""BLIP (Salesforce/blip-image-captioning-base and -large): an image encoder and a BERT-like caption decoder.

A caption prefix is the decoder's first tokens; the output repeats it. BLIP's own ``generate`` overwrites each
row's first column with its start token and drops the last (the prompt's [SEP]), which is only right for unpadded
rows: here every row is left-padded, still ends in [SEP], and starts with the start token itself, so one
``generate`` serves a batch of mixed prompts with the captions of one call per prompt.
"""

from __future__ import annotations

import torch
from PIL import Image

from captioner.families.base import Captioner, left_pad


class BlipCaptioner(Captioner):
    family = "blip"
    model_types = ("blip",)

    def start_tokens(self, prompt: str) -> int:
        # The prompt's tokens less the trailing [SEP] generate drops, or the start token alone.
        return len(self.tokenizer(prompt).input_ids) - 1 if prompt else 1

    def inputs(self, images: list[Image.Image], prompts: list[str]) -> dict[str, torch.Tensor]:
        inputs = {"pixel_values": self.pixels(images)}
        if not any(prompts):
            return inputs  # generate starts every row from the start token
        config = self.model.config.text_config
        rows = [[config.bos_token_id, *self.tokenizer(prompt).input_ids[1:]] if prompt
                else [config.bos_token_id, config.sep_token_id] for prompt in prompts]
        inputs["input_ids"], inputs["attention_mask"] = left_pad(rows, config.pad_token_id)
        return inputs


FAMILY = BlipCaptioner
