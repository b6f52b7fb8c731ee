"""Stable Video Diffusion (``StableVideoDiffusionPipeline``): image only, no prompt; motion, noise augmentation
and a guidance ramp over the frames.

Decode: ``decode`` applies the arithmetic of the pipeline's ``decode_latents`` and ``postprocess_video``
``decode_chunk_size`` frames at a time. Every operation after ``vae.decode`` is elementwise and ``vae.decode``
sees the same chunks as in the pipeline's own loop, so the frames equal those of a plain ``pipeline(...)`` call
with the same seed and chunk size.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from animator.families.base import PipelineBackend, call_default, default_previews, to_uint8
from animator.params import MAX_GUIDANCE_SCALE, FrameGrid, GenerationParams, ModelFields
from animator.preview import LatentCodec
from imagewire_serving.fields import RequestField

MAX_MOTION_BUCKET_ID = 1023
# The pipeline decodes every frame at once by default; eight at a time keeps bytes flowing while it decodes.
DECODE_CHUNK_SIZE = 8


class SvdBackend(PipelineBackend):
    family = "svd"
    pipeline_class = "StableVideoDiffusionPipeline"

    @classmethod
    def model_fields(cls, pipeline: Any) -> ModelFields:
        steps = call_default(pipeline, "num_inference_steps")
        defaults = {
            "width": call_default(pipeline, "width"), "height": call_default(pipeline, "height"),
            # The pipeline's default: the frame count the UNet was trained on.
            "num_frames": pipeline.unet.config.num_frames,
            # The pipeline passes fps - 1 to the UNet (see pipeline_arguments): its default of 7 conditions on 6.
            "fps": call_default(pipeline, "fps") - 1,
            "num_inference_steps": steps, "decode_chunk_size": DECODE_CHUNK_SIZE,
            "preview_every": default_previews(steps),
        }
        own = (
            RequestField("motion_bucket_id", call_default(pipeline, "motion_bucket_id"), 0, MAX_MOTION_BUCKET_ID),
            RequestField("noise_aug_strength", call_default(pipeline, "noise_aug_strength"), 0.0, 1.0),
            RequestField("min_guidance_scale", call_default(pipeline, "min_guidance_scale"), 0.0, MAX_GUIDANCE_SCALE),
            RequestField("max_guidance_scale", call_default(pipeline, "max_guidance_scale"), 0.0, MAX_GUIDANCE_SCALE),
        )
        # Two frames at least: with one, the guidance ramp is its first value alone and the pipeline, which decided
        # on classifier-free guidance from the last value, would fail.
        return ModelFields(cls.family, defaults, own, size_multiple=pipeline.vae_scale_factor,
                           frames=FrameGrid(minimum=2))

    @classmethod
    def latent_codec(cls, pipeline: Any) -> LatentCodec:
        vae = pipeline.vae
        scale = vae.config.scaling_factor
        kwargs = {"num_frames": 1} if _takes_num_frames(vae) else {}
        return (lambda images: vae.encode(images).latent_dist.mode() * scale,
                lambda latents: vae.decode(latents / scale, **kwargs).sample)

    def pipeline_arguments(self, params: GenerationParams) -> dict[str, Any]:
        return {
            "height": params.height, "width": params.width, "num_frames": params.num_frames,
            "num_inference_steps": params.num_inference_steps,
            # As the pipeline computes with them: it decides on classifier-free guidance from the float
            # max_guidance_scale, then builds the ramp in the latents' dtype, and a maximum just above 1 that rounds
            # to 1 there (1.001 in bfloat16) turned guidance off halfway: a batch of one met inputs of two.
            "min_guidance_scale": self._as_computed(params.min_guidance_scale),
            "max_guidance_scale": self._as_computed(params.max_guidance_scale),
            # StableVideoDiffusionPipeline passes fps - 1 to the UNet's added time ids (SVD was micro-conditioned on
            # that value; the reference conditions on 6 and writes 7 fps). We condition the model on exactly the
            # requested value and write the same value into the container, so we add the 1 back.
            "fps": params.fps + 1,
            "motion_bucket_id": params.motion_bucket_id, "noise_aug_strength": params.noise_aug_strength,
            "decode_chunk_size": params.decode_chunk_size,
        }

    def _as_computed(self, value: float | None) -> float | None:
        """``value`` rounded to the weights' dtype (that of the latents)."""
        return None if value is None else float(torch.tensor(value, dtype=self.dtype))

    def clean_estimate(self, scheduler: Any, output: Any, args: tuple[Any, ...]) -> torch.Tensor | None:
        # The Euler scheduler's pred_original_sample, (batch, frames, channels, h, w): the estimate diffusers
        # documents for previews.
        estimate = getattr(output, "pred_original_sample", None)
        return None if estimate is None else estimate[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, params: GenerationParams) -> Generator[np.ndarray, None, None]:
        pipeline = self.pipeline
        vae = pipeline.vae
        latents = 1 / vae.config.scaling_factor * latents.flatten(0, 1)  # the pipeline's own arithmetic
        accepts_num_frames = _takes_num_frames(vae)
        chunk = params.decode_chunk_size
        try:
            for start in range(0, latents.shape[0], chunk):
                part = latents[start : start + chunk]
                kwargs = {"num_frames": part.shape[0]} if accepts_num_frames else {}
                frames = vae.decode(part, **kwargs).sample.float()
                yield to_uint8(pipeline.video_processor.postprocess(frames, output_type="np"))
        finally:
            pipeline.maybe_free_model_hooks()


def _takes_num_frames(vae: Any) -> bool:
    forward = vae._orig_mod.forward if hasattr(vae, "_orig_mod") else vae.forward
    return "num_frames" in inspect.signature(forward).parameters
