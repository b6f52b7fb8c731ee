"""Stable Video Diffusion models built from configs: ``tiny`` (the embedded default, the tests' model) and
``bench``.

``tiny``: a random SVD of a few megabytes that generates a short low-resolution video in well under a second on a
CPU. It exercises every code path of the real pipeline (CLIP image encoder, spatio-temporal UNet, Euler scheduler,
temporal VAE decoder with the real model's scale factor of 8); its videos are coloured noise.
``bench``: a random SVD with the real model's layout at a tenth of its width, which takes about ten seconds per
request (256x144, 8 frames, 6 steps) on two shared CPU cores, for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animator.tiny.common import save
from imagewire_serving.model_cache import LocalModels


@dataclass(frozen=True)
class SvdPreset:
    """The sizes of a locally built SVD and the request defaults that suit it."""

    unet_channels: tuple[int, ...]
    unet_heads: tuple[int, ...]
    unet_layers_per_block: int
    time_embed_dim: int
    vae_channels: tuple[int, ...]  # four levels: the real model's scale factor of 8
    vae_layers_per_block: int
    clip_hidden: int
    clip_layers: int
    clip_heads: int
    clip_patch: int
    num_frames: int
    default_width: int
    default_height: int
    default_steps: int
    default_decode_chunk_size: int
    seed: int = 0
    # A preview every other step: the few steps of these models would otherwise show none.
    default_preview_every: int = 2


PRESETS: dict[str, SvdPreset] = {
    # diffusers' own SVD test components (get_dummy_components), with a scale-8 VAE and a 224 px CLIP.
    "tiny": SvdPreset(
        unet_channels=(32, 64), unet_heads=(2, 4), unet_layers_per_block=1, time_embed_dim=32,
        vae_channels=(32, 32, 32, 32), vae_layers_per_block=1,
        clip_hidden=32, clip_layers=2, clip_heads=2, clip_patch=32,
        num_frames=8, default_width=128, default_height=72, default_steps=4, default_decode_chunk_size=4,
    ),
    # SVD-XT's layout (four UNet levels, attention in three, 2 layers per block; a four-level temporal VAE; a
    # ViT/14 at 224 px) at a tenth of its width (320-640-1280-1280 -> 32-64-128-128), with heads of 32: about
    # ten seconds per request on two shared CPU cores.
    "bench": SvdPreset(
        unet_channels=(32, 64, 128, 128), unet_heads=(1, 2, 4, 4), unet_layers_per_block=2, time_embed_dim=64,
        vae_channels=(32, 64, 64, 64), vae_layers_per_block=1,
        clip_hidden=128, clip_layers=4, clip_heads=4, clip_patch=14,
        num_frames=8, default_width=256, default_height=144, default_steps=6, default_decode_chunk_size=4,
    ),
}


def build_svd(out: Path, preset: SvdPreset) -> Path:
    """Build a random SVD pipeline with this preset's sizes, seeded, and ``save_pretrained`` it to ``out``."""
    save(random_pipeline(preset), out, request_defaults(preset),
         processors={"feature_extractor": "CLIPImageProcessor"})
    return out


def random_pipeline(preset: SvdPreset) -> Any:
    """A ``StableVideoDiffusionPipeline`` of random components with this preset's sizes, seeded by it (the
    trained embedded model starts from one too)."""
    import torch
    from diffusers import StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    torch.manual_seed(preset.seed)
    # Built in this order from one seed: the order decides the weights.
    unet, vae, image_encoder = _unet(preset), _vae(preset), _image_encoder(preset)
    return StableVideoDiffusionPipeline(
        vae=vae.eval(), image_encoder=image_encoder.eval(), unet=unet.eval(), scheduler=_scheduler(),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )


def request_defaults(preset: SvdPreset) -> dict[str, Any]:
    """The request defaults written with a model of this preset (DEFAULTS_FILE)."""
    return {
        "width": preset.default_width,
        "height": preset.default_height,
        "num_frames": preset.num_frames,
        "num_inference_steps": preset.default_steps,
        "decode_chunk_size": preset.default_decode_chunk_size,
        "preview_every": preset.default_preview_every,
    }


def _unet(preset: SvdPreset) -> Any:
    from diffusers import UNetSpatioTemporalConditionModel

    levels = len(preset.unet_channels)
    return UNetSpatioTemporalConditionModel(
        sample_size=preset.default_height // 8,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (levels - 1) + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (levels - 1),
        block_out_channels=preset.unet_channels,
        addition_time_embed_dim=preset.time_embed_dim,
        # fps, motion bucket and noise augmentation, each embedded to time_embed_dim.
        projection_class_embeddings_input_dim=3 * preset.time_embed_dim,
        layers_per_block=preset.unet_layers_per_block,
        cross_attention_dim=preset.clip_hidden,
        num_attention_heads=preset.unet_heads,
        num_frames=preset.num_frames,
    )


def _vae(preset: SvdPreset) -> Any:
    from diffusers import AutoencoderKLTemporalDecoder

    return AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(preset.vae_channels),
        block_out_channels=preset.vae_channels,
        layers_per_block=preset.vae_layers_per_block,
        latent_channels=4,
    )


def _image_encoder(preset: SvdPreset) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=preset.clip_hidden,
            projection_dim=preset.clip_hidden,
            num_hidden_layers=preset.clip_layers,
            num_attention_heads=preset.clip_heads,
            intermediate_size=preset.clip_hidden * 4,
            # The pipeline always resizes the conditioning image to 224x224 before the image encoder.
            image_size=224,
            patch_size=preset.clip_patch,
        )
    )


def _scheduler() -> Any:
    """The scheduler configuration of stabilityai/stable-video-diffusion-img2vid-xt."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


# Part of the cache key: bump it when build_svd changes what it writes, so cached builds are not reused.
BUILD_VERSION = 2
MODELS = LocalModels("svd", PRESETS, build_svd, version=BUILD_VERSION, marker="model_index.json")

