"""A tiny random StableDiffusionSafetyChecker for the tests of --safety-checker."""

from __future__ import annotations

from pathlib import Path


def build_safety_checker(out: Path, *, flag_everything: bool, seed: int = 0) -> Path:
    """A tiny random StableDiffusionSafetyChecker (+ CLIP image processor) for tests.

    Its concept thresholds are set so that it flags every image (``flag_everything``) or none: a random model's
    similarities are meaningless, but the verdict then exercises both paths deterministically.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 32},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        projection_dim=32,
    )
    model = StableDiffusionSafetyChecker(config).eval()
    # Cosine similarity lies in [-1, 1]: a threshold of -2 is always exceeded, +2 never.
    threshold = -2.0 if flag_everything else 2.0
    with torch.no_grad():
        model.concept_embeds_weights.fill_(threshold)
        model.special_care_embeds_weights.fill_(threshold)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    CLIPImageProcessor(crop_size=224, size=224).save_pretrained(out)
    return out
