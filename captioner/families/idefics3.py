"""Idefics3 and the SmolVLM models built on it (HuggingFaceTB/SmolVLM-256M-Instruct, -500M-Instruct,
SmolVLM-Instruct): a SigLIP image encoder whose tokens, tiled for large images, feed a Llama-like language model.

A chat model: see :mod:`captioner.families.chat`. The processor tiles each image by its size, so rows of one batch
differ in length and are left-padded; the longest prompt is that of the largest tiling.
"""

from __future__ import annotations

from captioner.families.chat import ChatCaptioner


class Idefics3Captioner(ChatCaptioner):
    family = "idefics3"
    model_types = ("idefics3",)


FAMILY = Idefics3Captioner
