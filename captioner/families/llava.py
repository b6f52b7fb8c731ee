"""LLaVA (llava-hf/llava-1.5-7b-hf, llava-hf/llava-interleave-qwen-0.5b-hf and the other llava-hf conversions):
a CLIP or SigLIP image encoder whose patches, projected, stand in the language model's prompt.

A chat model: see :mod:`captioner.families.chat`. Every image takes the same number of tokens, so rows differ only
by their prompt.
"""

from __future__ import annotations

from captioner.families.chat import ChatCaptioner


class LlavaCaptioner(ChatCaptioner):
    family = "llava"
    model_types = ("llava",)


FAMILY = LlavaCaptioner
