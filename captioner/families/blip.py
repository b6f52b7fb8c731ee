"""BLIP (Salesforce/blip-image-captioning-base and -large): an image encoder and a BERT-like caption decoder.

A caption prefix is the decoder's first tokens; the output repeats it. BLIP's own ``generate`` overwrites each
row's first column with its start token and drops the last (the prompt's [SEP]), which is only right for unpadded
rows: here every row is left-padded, still ends in [SEP], and starts with the start token itself, so one
``generate`` serves a batch of mixed prompts with the captions of one call per prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from transformers.cache_utils import EncoderDecoderCache, StaticCache

from captioner.families.base import Captioner, left_pad


class BlipCaptioner(Captioner):
    family = "blip"
    model_types = ("blip",)
    decoder = "text_decoder"

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

    def static_cache(self, rows: int, positions: int) -> Any:
        """The decoder's keys and values in tensors of fixed shape, allocated now: the self-attention's for
        ``positions`` tokens, the cross-attention's for the image's tokens (filled by the first pass, eager or
        compiled, into the same layout). A batch of several rows is marked dynamic in its size, as the compiled
        part's inputs are.

        Each call has a cache of its own, so its tensors are ordinary inputs of the compiled steps: transformers
        marks them as static addresses (for CUDA graphs), which the compiled graph took as the same tensors on
        every call (the second caption read and wrote the first's cache). The mark is taken off."""
        config = self.model.config
        vision = config.vision_config
        image_tokens = (vision.image_size // vision.patch_size) ** 2 + 1  # the patches and the class token
        text = config.text_config
        heads = text.num_attention_heads
        caches = [StaticCache(config=text, max_cache_len=length) for length in (positions, image_tokens)]
        for cache in caches:
            cache.early_initialization(rows, heads, text.hidden_size // heads, self.dtype, self.device)
            for layer in cache.layers:
                static: Any = layer  # a StaticLayer, its tensors allocated by early_initialization
                for tensor in (static.keys, static.values, static.cumulative_length):
                    tensor.__dict__.pop("_dynamo_static_input_type", None)  # torch._dynamo.mark_static_address's
                if rows > 1:
                    torch._dynamo.maybe_mark_dynamic(static.keys, 0)
                    torch._dynamo.maybe_mark_dynamic(static.values, 0)
        return EncoderDecoderCache(*caches)


FAMILY = BlipCaptioner
