"""LTX-Video image-to-video (``LTXImageToVideoPipeline``): a T5 text prompt with classifier-free guidance, a
transformer over packed latents, and a video VAE that compresses space by 32 and time by 8 (so 8k + 1 frames
from k + 1 latent frames; sizes are multiples of 32, as its ``check_inputs`` demands).

Decode: LTX-Video's decoder is not causal: each output frame depends on latent frames on both sides, through more
convolutions than a video has latent frames, so no cut in time gives exactly the frames of one whole decode.
diffusers' own answer for long videos is its framewise (temporal tiled) decoding: overlapping tiles of latent
frames decoded one by one, each crossfaded into the previous over the overlap. ``decode`` runs exactly that loop
(the VAE's own ``decode`` per tile and its own ``blend_t``) but yields each tile's frames as soon as they are
final, with tiles of ``decode_chunk_size`` frames plus one latent frame (8 frames) of overlap, diffusers' default
overlap. The frames equal those of a plain ``pipeline(...)`` call with the same seed whose VAE has
``use_framewise_decoding`` on and those tile sizes; with ``decode_chunk_size`` of ``num_frames - 1`` or more there is
one tile, which is the plain pipeline's untiled decode exactly.
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

# check_inputs: height and width divisible by 32, whatever the VAE.
SIZE_MULTIPLE = 32
# Tiles of 24 + 8 frames: three latent frames emitted per tile, one of overlap.
DECODE_CHUNK_LATENT_FRAMES = 3


class LtxBackend(PromptedBackend):
    family = "ltx"
    pipeline_class = "LTXImageToVideoPipeline"
    # LTX-Video is trained in bfloat16; its T5 encoder overflows float16.
    trained_dtype = torch.bfloat16

    @classmethod
    def model_fields(cls, pipeline: Any) -> ModelFields:
        steps = call_default(pipeline, "num_inference_steps")
        time = _time_compression(pipeline)
        defaults = {
            "width": call_default(pipeline, "width"), "height": call_default(pipeline, "height"),
            "num_frames": call_default(pipeline, "num_frames"), "fps": call_default(pipeline, "frame_rate"),
            "num_inference_steps": steps, "decode_chunk_size": DECODE_CHUNK_LATENT_FRAMES * time,
            "preview_every": default_previews(steps),
        }
        size = math.lcm(SIZE_MULTIPLE, pipeline.vae_spatial_compression_ratio * pipeline.transformer_spatial_patch_size)
        # A scheduler that stretches its sigmas to a terminal value (LTX-Video's) divides by zero with one step.
        min_steps = 2 if pipeline.scheduler.config.get("shift_terminal") else 1
        return ModelFields(cls.family, defaults, cls.prompt_fields(pipeline), size_multiple=size,
                           frames=FrameGrid(minimum=time + 1, multiple=time, remainder=1), chunk_multiple=time,
                           min_steps=min_steps)

    @classmethod
    def latent_codec(cls, pipeline: Any) -> LatentCodec:
        vae = pipeline.vae

        def encode(images: torch.Tensor) -> torch.Tensor:
            latents = vae.encode(images[:, :, None]).latent_dist.mode()
            return pipeline._normalize_latents(latents, vae.latents_mean, vae.latents_std)[:, :, 0]

        def decode(latents: torch.Tensor) -> torch.Tensor:
            latents = pipeline._denormalize_latents(latents[:, :, None], vae.latents_mean, vae.latents_std,
                                                    vae.config.scaling_factor)
            return vae.decode(latents, _decode_timestep(pipeline, latents)).sample[:, :, 0]

        return encode, decode

    def pipeline_arguments(self, params: GenerationParams) -> dict[str, Any]:
        return {**self.prompt_arguments(params), "height": params.height, "width": params.width,
                "num_frames": params.num_frames, "frame_rate": params.fps,
                "num_inference_steps": params.num_inference_steps}

    def clean_estimate(self, scheduler: Any, output: Any, args: tuple[Any, ...]) -> torch.Tensor | None:
        # The pipeline steps the latent frames after the first (the image's own, kept fixed).
        return flow_estimate(scheduler, args)

    @torch.no_grad()
    def ready_to_decode(self, latents: torch.Tensor, params: GenerationParams,
                        noise: torch.Generator) -> torch.Tensor:
        # The pipeline's own steps after its loop: unpack, denormalise, and for a timestep-conditioned VAE mix in
        # decode noise drawn from the same generator (the mix is 0 at the pipeline's default decode timestep).
        from diffusers.utils.torch_utils import randn_tensor

        pipeline, vae = self.pipeline, self.pipeline.vae
        shape = ((params.num_frames - 1) // _time_compression(pipeline) + 1,
                 params.height // pipeline.vae_spatial_compression_ratio,
                 params.width // pipeline.vae_spatial_compression_ratio)
        latents = pipeline._unpack_latents(latents, *shape, pipeline.transformer_spatial_patch_size,
                                           pipeline.transformer_temporal_patch_size)
        latents = pipeline._denormalize_latents(latents, vae.latents_mean, vae.latents_std,
                                                vae.config.scaling_factor).to(self.dtype)
        if not vae.config.timestep_conditioning:
            return latents
        drawn = randn_tensor(latents.shape, generator=noise, device=latents.device, dtype=latents.dtype)
        scale = torch.tensor([call_default(pipeline, "decode_timestep")], device=latents.device,
                             dtype=latents.dtype)[:, None, None, None, None]
        return (1 - scale) * latents + scale * drawn

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, params: GenerationParams) -> Generator[np.ndarray, None, None]:
        pipeline, vae = self.pipeline, self.pipeline.vae
        time = _time_compression(pipeline)
        stride = max(1, params.decode_chunk_size // time)  # latent frames per tile, beyond the overlap
        count = latents.shape[2]
        frames = (count - 1) * time + 1
        timestep = _decode_timestep(pipeline, latents)
        onload(vae)
        try:
            if count <= stride + 1:  # one tile: the untiled decode (as diffusers decides for framewise decoding)
                yield self._frames(vae.decode(latents, timestep).sample)
                return
            previous: torch.Tensor | None = None
            sent = 0
            for start in range(0, count, stride):
                tile = vae.decode(latents[:, :, start : start + stride + 2], timestep).sample
                if previous is None:
                    previous, piece = tile, tile[:, :, : stride * time + 1]
                else:
                    previous = vae.blend_t(previous, tile[:, :, :-1], time)
                    piece = previous[:, :, : stride * time]
                piece = piece[:, :, : frames - sent]
                sent += piece.shape[2]
                if piece.shape[2]:
                    yield self._frames(piece)
                if sent == frames:  # any later tile's frames would all be cut off
                    break
        finally:
            pipeline.maybe_free_model_hooks()

    def _frames(self, video: torch.Tensor) -> np.ndarray:
        return to_uint8(self.pipeline.video_processor.postprocess_video(video, output_type="np")[0])


def _time_compression(pipeline: Any) -> int:
    return int(pipeline.vae_temporal_compression_ratio * pipeline.transformer_temporal_patch_size)


def _decode_timestep(pipeline: Any, latents: torch.Tensor) -> torch.Tensor | None:
    """The timestep a timestep-conditioned VAE decodes at (the pipeline's default), or None."""
    if not pipeline.vae.config.timestep_conditioning:
        return None
    return torch.tensor([call_default(pipeline, "decode_timestep")], device=latents.device, dtype=latents.dtype)
