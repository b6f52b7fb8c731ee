"""Wan image-to-video (``WanImageToVideoPipeline``, Wan 2.1 and 2.2): a UMT5 text prompt with classifier-free
guidance, a CLIP image encoder where the model has one, and a causal video VAE that compresses time by 4 (so
4k + 1 frames) and space by 8 (sizes are multiples of 16, as its ``check_inputs`` demands). The model takes no
frame rate: ``fps`` is only the rate written into the video (Wan 2.1 makes 16 frames a second).

Decode: Wan's VAE is causal and decodes one latent frame at a time already, carrying a cache of each causal
convolution's last inputs from frame to frame (``AutoencoderKLWan._decode``). ``decode`` runs that same loop and
yields the frames of every ``decode_chunk_size / 4`` latent frames as they come out; the cache makes each frame
exactly what the whole decode gives, so the frames equal those of a plain ``pipeline(...)`` call with the same
seed, whatever the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from animator.families.base import call_default, default_previews, flow_estimate, onload, to_uint8
from animator.families.prompted import PromptedBackend
from animator.params import FrameGrid, GenerationParams, ModelFields
from animator.preview import LatentCodec

# check_inputs: height and width divisible by 16.
SIZE_MULTIPLE = 16
# Wan 2.1's frame rate; the pipeline has no fps argument.
FPS = 16
DECODE_CHUNK_LATENT_FRAMES = 4


class WanBackend(PromptedBackend):
    family = "wan"
    pipeline_class = "WanImageToVideoPipeline"
    # Wan's transformers and text encoder are trained in bfloat16; its authors run the VAE and the image encoder
    # in float32.
    trained_dtype = torch.bfloat16
    float32_components = ("vae", "image_encoder")

    @classmethod
    def model_fields(cls, pipeline: Any) -> ModelFields:
        steps = call_default(pipeline, "num_inference_steps")
        time = pipeline.vae_scale_factor_temporal
        transformer = pipeline.transformer if pipeline.transformer is not None else pipeline.transformer_2
        defaults = {
            "width": call_default(pipeline, "width"), "height": call_default(pipeline, "height"),
            "num_frames": call_default(pipeline, "num_frames"), "fps": FPS, "num_inference_steps": steps,
            "decode_chunk_size": DECODE_CHUNK_LATENT_FRAMES * time, "preview_every": default_previews(steps),
        }
        # The pipeline rounds sizes down to whole transformer patches of latent pixels; we ask for them.
        size = math.lcm(SIZE_MULTIPLE, pipeline.vae_scale_factor_spatial * transformer.config.patch_size[1])
        return ModelFields(cls.family, defaults, cls.prompt_fields(pipeline), size_multiple=size,
                           frames=FrameGrid(minimum=time + 1, multiple=time, remainder=1), chunk_multiple=time)

    @classmethod
    def latent_codec(cls, pipeline: Any) -> LatentCodec:
        vae = pipeline.vae

        def encode(images: torch.Tensor) -> torch.Tensor:
            mean, inverse_std = _normalisation(vae, images)
            return ((vae.encode(images[:, :, None]).latent_dist.mode() - mean) * inverse_std)[:, :, 0]

        def decode(latents: torch.Tensor) -> torch.Tensor:
            mean, inverse_std = _normalisation(vae, latents)
            return vae.decode(latents[:, :, None] / inverse_std + mean).sample[:, :, 0]

        return encode, decode

    def pipeline_arguments(self, params: GenerationParams) -> dict[str, Any]:
        return {**self.prompt_arguments(params), "height": params.height, "width": params.width,
                "num_frames": params.num_frames, "num_inference_steps": params.num_inference_steps}

    def clean_estimate(self, scheduler: Any, output: Any, args: tuple[Any, ...]) -> torch.Tensor | None:
        return flow_estimate(scheduler, args)

    @torch.no_grad()
    def ready_to_decode(self, latents: torch.Tensor, params: GenerationParams,
                        noise: torch.Generator) -> torch.Tensor:
        # The pipeline's own arithmetic after its loop.
        vae = self.pipeline.vae
        latents = latents.to(device=self.device, dtype=vae.dtype)
        mean, inverse_std = _normalisation(vae, latents)
        return latents / inverse_std + mean

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, params: GenerationParams) -> Generator[np.ndarray, None, None]:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        pipeline, vae = self.pipeline, self.pipeline.vae
        per_chunk = max(1, params.decode_chunk_size // pipeline.vae_scale_factor_temporal)
        onload(vae)
        vae.clear_cache()
        try:
            hidden = vae.post_quant_conv(latents)
            decoded: list[torch.Tensor] = []
            for index in range(hidden.shape[2]):
                vae._conv_idx = [0]
                decoded.append(vae.decoder(hidden[:, :, index : index + 1], feat_cache=vae._feat_map,
                                           feat_idx=vae._conv_idx, first_chunk=index == 0))
                if len(decoded) == per_chunk or index == hidden.shape[2] - 1:
                    video = torch.cat(decoded, 2)
                    decoded = []
                    if vae.config.patch_size is not None:
                        video = unpatchify(video, patch_size=vae.config.patch_size)
                    video = torch.clamp(video, min=-1.0, max=1.0)
                    yield to_uint8(pipeline.video_processor.postprocess_video(video, output_type="np")[0])
        finally:
            vae.clear_cache()  # the causal cache holds activations of this video
            pipeline.maybe_free_model_hooks()


def _normalisation(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's per-channel latent mean and 1 / std, shaped and placed as the pipeline makes them."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, inverse_std
