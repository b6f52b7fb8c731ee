"""A tiny random Wan 2.1 image-to-video pipeline built from configs: Wan's layout (a causal video VAE that
compresses space by 8 and time by 4; a transformer with image cross-attention fed by a CLIP vision encoder; a
UMT5 text encoder; a UniPC flow scheduler as the Wan 2.1 image-to-video repositories configure it) at a few
channels wide. It takes a prompt in the small vocabulary of :mod:`animator.tiny.common` and makes a 96x64,
9-frame video of noise in about a second on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animator.tiny.common import TinyDefaults, TinyText, save, t5_tokenizer, text_config
from imagewire_serving.model_cache import LocalModels


@dataclass(frozen=True)
class WanPreset:
    """The sizes of a locally built Wan and the request defaults that suit it."""

    vae_base: int
    latent_channels: int
    heads: int
    head_dim: int
    layers: int
    clip_hidden: int
    defaults: TinyDefaults
    text: TinyText = TinyText()
    seed: int = 0


PRESETS = {
    "wan-tiny": WanPreset(vae_base=4, latent_channels=16, heads=2, head_dim=12, layers=1, clip_hidden=32,
                          defaults=TinyDefaults(width=96, height=64, num_frames=9, num_inference_steps=4,
                                                decode_chunk_size=4)),
}


def build_wan(out: Path, preset: WanPreset) -> Path:
    """Build a random WanImageToVideoPipeline with this preset's sizes, seeded, and ``save_pretrained`` it."""
    import torch
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(preset.seed)
    tokenizer = t5_tokenizer(preset.text.max_tokens)
    text_encoder = UMT5EncoderModel(UMT5Config(**text_config(len(tokenizer), preset.text)))
    vae = AutoencoderKLWan(base_dim=preset.vae_base, z_dim=preset.latent_channels, dim_mult=[1, 1, 1, 1],
                           num_res_blocks=1, temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=preset.heads, attention_head_dim=preset.head_dim,
        # The noisy latents, the image's latents and the 4 channels of the first-frame mask.
        in_channels=2 * preset.latent_channels + 4, out_channels=preset.latent_channels,
        text_dim=preset.text.width, freq_dim=256, ffn_dim=2 * preset.heads * preset.head_dim,
        num_layers=preset.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        image_dim=preset.clip_hidden,
    )
    # Wan's pipeline always resizes the conditioning image for CLIP to the processor's crop size: 224, as Wan's.
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=preset.clip_hidden, num_hidden_layers=2, num_attention_heads=preset.heads,
        intermediate_size=2 * preset.clip_hidden, image_size=224, patch_size=32))
    pipeline = WanImageToVideoPipeline(
        # mypy finds no nn.Module.eval on these diffusers model classes (it is there at run time).
        tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(),  # type: ignore[attr-defined]
        scheduler=_scheduler(),
        image_processor=CLIPImageProcessor(crop_size=224, size=224), image_encoder=image_encoder.eval(),
        transformer=transformer.eval(),  # type: ignore[attr-defined] # as vae above
    )
    return save(pipeline, out, preset.defaults, processors={"image_processor": "CLIPImageProcessor"})


def _scheduler() -> Any:
    """The scheduler configuration of the Wan 2.1 480p image-to-video repositories: UniPC on flow sigmas."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                   num_train_timesteps=1000)


# Part of the cache key: bump it when build_wan changes what it writes.
BUILD_VERSION = 1
MODELS = LocalModels("wan", PRESETS, build_wan, version=BUILD_VERSION, marker="model_index.json")
