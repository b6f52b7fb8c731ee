"""A tiny random LTX-Video image-to-video pipeline built from configs: LTX-Video's layout (a video VAE that
compresses space by 32 and time by 8 with a timestep-conditioned decoder, as from 0.9.1 on; a transformer over
latent patches; a T5 encoder; its flow-matching scheduler config) at a few channels wide. It takes a prompt in
the small vocabulary of :mod:`animator.tiny.common` and makes a 96x64, 17-frame video of noise in a fraction of
a second on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animator.tiny.common import TinyDefaults, TinyText, save, t5_tokenizer, text_config
from imagewire_serving.model_cache import LocalModels


@dataclass(frozen=True)
class LtxPreset:
    """The sizes of a locally built LTX-Video and the request defaults that suit it."""

    latent_channels: int
    vae_channels: int
    heads: int
    head_dim: int
    layers: int
    defaults: TinyDefaults
    text: TinyText = TinyText()
    seed: int = 0


PRESETS = {
    "ltx-tiny": LtxPreset(latent_channels=16, vae_channels=8, heads=2, head_dim=8, layers=1,
                          defaults=TinyDefaults(width=96, height=64, num_frames=17, num_inference_steps=4,
                                                decode_chunk_size=8)),
}


def build_ltx(out: Path, preset: LtxPreset) -> Path:
    """Build a random LTXImageToVideoPipeline with this preset's sizes, seeded, and ``save_pretrained`` it."""
    import torch
    from diffusers import AutoencoderKLLTXVideo, LTXImageToVideoPipeline, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(preset.seed)
    tokenizer = t5_tokenizer(preset.text.max_tokens)
    text_encoder = T5EncoderModel(T5Config(**text_config(len(tokenizer), preset.text)))
    width = preset.vae_channels
    vae = AutoencoderKLLTXVideo(
        latent_channels=preset.latent_channels, block_out_channels=(width,) * 4,
        decoder_block_out_channels=(width,) * 4, layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5,
        # Three levels that halve space and time, and patches of 4: 32x in space, 8x in time, as the real VAE.
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        patch_size=4, timestep_conditioning=True,
    )
    transformer = LTXVideoTransformer3DModel(
        in_channels=preset.latent_channels, out_channels=preset.latent_channels, patch_size=1, patch_size_t=1,
        num_attention_heads=preset.heads, attention_head_dim=preset.head_dim,
        cross_attention_dim=preset.heads * preset.head_dim, num_layers=preset.layers,
        caption_channels=preset.text.width,
    )
    # mypy finds no nn.Module.eval on these diffusers model classes (it is there at run time).
    pipeline = LTXImageToVideoPipeline(scheduler=_scheduler(), vae=vae.eval(),  # type: ignore[attr-defined]
                                       text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                       transformer=transformer.eval())  # type: ignore[attr-defined] # as vae
    return save(pipeline, out, preset.defaults)


def _scheduler() -> Any:
    """The scheduler configuration of Lightricks/LTX-Video: flow matching with a resolution-dependent shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096, max_shift=2.05, shift=1.0,
        shift_terminal=0.1, use_dynamic_shifting=True, num_train_timesteps=1000,
    )


# Part of the cache key: bump it when build_ltx changes what it writes.
BUILD_VERSION = 1
MODELS = LocalModels("ltx", PRESETS, build_ltx, version=BUILD_VERSION, marker="model_index.json")
