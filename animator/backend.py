"""The video model behind a small protocol: Stable Video Diffusion via diffusers, loaded with from_pretrained.

The backend splits the pipeline call in two so that video can be encoded while it is decoded: ``denoise`` runs
the pipeline itself with ``output_type="latent"`` (image encoding and the denoising loop, with a per-step
callback), and ``decode`` turns the latents into uint8 frames ``decode_chunk_size`` frames at a time with the same
arithmetic as the pipeline's ``decode_latents`` and ``postprocess_video``, so the frames equal those of a plain
``pipeline(...)`` call with the same seed. Each step reports the scheduler's current estimate of the clean latents,
from which :mod:`animator.preview` draws a preview at a fraction of a step's cost.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from animator.params import GenerationParams, ModelDefaults
from animator.preview import LatentProjection
from imagewire_serving.device import dtype_name

_LOGGER = logging.getLogger(__name__)

# A model directory may carry request defaults suited to it (see read_defaults); the tiny and bench builds do.
DEFAULTS_FILE = "imagewire_animate.json"



@dataclass(frozen=True)
class Step:
    """A finished denoising step."""

    done: int
    total: int
    # The scheduler's current estimate of the clean latents, (frames, channels, h, w); None when it gives none.
    denoised: torch.Tensor | None = None


# Called after each denoising step; it may raise to stop the loop.
StepCallback = Callable[[Step], None]


class VideoBackend(Protocol):
    """A loaded image-to-video model. All methods block and run on the engine's device worker thread."""

    model_id: str
    family: str
    device: torch.device
    dtype: torch.dtype
    defaults: ModelDefaults

    def denoise(self, image: Image.Image, params: GenerationParams, on_step: StepCallback) -> torch.Tensor:
        """Encode the image and run the denoising loop; returns the final latents."""
        ...

    def decode(self, latents: torch.Tensor, params: GenerationParams) -> Iterator[np.ndarray]:
        """Decode latents to frames, yielding uint8 RGB arrays of shape (n, height, width, 3) chunk by chunk."""
        ...

    def preview_frames(self, denoised: torch.Tensor) -> np.ndarray:
        """A few frames of a step's ``denoised`` latents, approximated cheaply: uint8 RGB (n, h, w, 3) at the latent
        resolution."""
        ...


def read_defaults(source: str, num_frames: int) -> ModelDefaults:
    """The defaults of a model: the SVD-XT values with the UNet's frame count, overridden by an
    ``imagewire_animate.json`` in the model directory."""
    values: dict[str, object] = {"num_frames": num_frames}
    path = Path(source) / DEFAULTS_FILE
    if path.is_file():
        values.update(json.loads(path.read_text()))
    return ModelDefaults(**{name: values[name] for name in ModelDefaults.__dataclass_fields__ if name in values})


class SvdBackend:
    """StableVideoDiffusionPipeline from a local directory or a hub id."""

    family = "svd"

    def __init__(self, model_id: str, pipeline: object, device: torch.device, dtype: torch.dtype,
                 defaults: ModelDefaults, projection: LatentProjection) -> None:
        self.model_id = model_id
        self.pipeline = pipeline
        self.device = device
        self.dtype = dtype
        self.defaults = defaults
        self.projection = projection

    @classmethod
    def load(cls, source: str, device: torch.device, dtype: torch.dtype, *, model_id: str | None = None,
             cpu_offload: bool = False) -> SvdBackend:
        """Load through from_pretrained: the fp16 weights variant on CUDA when the model has one.

        ``cpu_offload`` keeps each component on the CPU until it runs (diffusers' model CPU offload), which fits
        SVD-XT on a 24 GB card at the cost of transfer time.
        """
        from diffusers import StableVideoDiffusionPipeline

        kwargs: dict[str, object] = {"dtype": dtype}
        pipeline = None
        if dtype == torch.float16:
            try:
                pipeline = StableVideoDiffusionPipeline.from_pretrained(source, variant="fp16", **kwargs)
            except (OSError, ValueError):  # no fp16 files: load the full weights and cast them
                _LOGGER.info("%s has no fp16 variant; casting its weights", source)
        if pipeline is None:
            pipeline = StableVideoDiffusionPipeline.from_pretrained(source, **kwargs)
        if cpu_offload and device.type == "cuda":
            pipeline.enable_model_cpu_offload(gpu_id=device.index or 0)
        else:
            if cpu_offload:
                _LOGGER.warning("--cpu-offload applies to CUDA devices; ignored on %s", device)
            pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        _LOGGER.info("loaded video model %s on %s (%s%s)", source, device, dtype_name(dtype),
                     ", cpu offload" if cpu_offload else "")
        defaults = read_defaults(source, num_frames=pipeline.unet.config.num_frames)
        projection = LatentProjection.fit(pipeline.vae, device, dtype)
        pipeline.maybe_free_model_hooks()  # with CPU offload, the VAE goes back to the CPU after the fit
        return cls(model_id or source, pipeline, device, dtype, defaults, projection)

    def denoise(self, image: Image.Image, params: GenerationParams, on_step: StepCallback) -> torch.Tensor:
        total = params.num_inference_steps
        scheduler = self.pipeline.scheduler  # type: ignore[attr-defined]
        scheduler_step = scheduler.step
        denoised: list[torch.Tensor | None] = [None]

        def step(*args: object, **kwargs: object) -> object:
            # The pipeline keeps only prev_sample; the scheduler's pred_original_sample is the clean estimate
            # diffusers documents for previews.
            output = scheduler_step(*args, **kwargs)
            denoised[0] = getattr(output, "pred_original_sample", None)
            return output

        def step_end(_pipeline: object, index: int, _timestep: object, _tensors: dict[str, Any]) -> dict[str, Any]:
            estimate = denoised[0]
            on_step(Step(index + 1, total, None if estimate is None else estimate[0]))
            return {}

        scheduler.step = step  # for this call only: an instance attribute shadowing the method
        finished = False
        try:
            latents = self._run_pipeline(image, params, step_end)
            finished = True
            return latents
        finally:
            del scheduler.step
            if not finished:
                # The pipeline frees its model hooks (offloading its components back to the CPU under
                # --cpu-offload) only when it runs to the end; a stopped or failed run must do it here.
                self.pipeline.maybe_free_model_hooks()  # type: ignore[attr-defined]

    def _run_pipeline(self, image: Image.Image, params: GenerationParams, step_end: Callable[..., object]
                      ) -> torch.Tensor:
        output = self.pipeline(  # type: ignore[operator]
            _at_least_two_pixels(image),
            height=params.height,
            width=params.width,
            num_frames=params.num_frames,
            num_inference_steps=params.num_inference_steps,
            min_guidance_scale=params.min_guidance_scale,
            max_guidance_scale=params.max_guidance_scale,
            fps=params.pipeline_fps,
            motion_bucket_id=params.motion_bucket_id,
            noise_aug_strength=params.noise_aug_strength,
            decode_chunk_size=params.decode_chunk_size,
            generator=generator(params.seed),
            output_type="latent",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=[],
        )
        return output.frames

    def preview_frames(self, denoised: torch.Tensor) -> np.ndarray:
        return self.projection.frames(denoised)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, params: GenerationParams) -> Iterator[np.ndarray]:
        # The steps of StableVideoDiffusionPipeline.decode_latents and postprocess_video, applied per chunk
        # instead of to the whole video: every operation after vae.decode is elementwise, and vae.decode sees the
        # same chunks, so the frames are identical.
        pipeline = self.pipeline
        vae = pipeline.vae  # type: ignore[attr-defined]
        latents = latents.flatten(0, 1)
        latents = 1 / vae.config.scaling_factor * latents
        forward = vae._orig_mod.forward if hasattr(vae, "_orig_mod") else vae.forward
        accepts_num_frames = "num_frames" in inspect.signature(forward).parameters
        chunk = params.decode_chunk_size
        try:
            for start in range(0, latents.shape[0], chunk):
                part = latents[start : start + chunk]
                kwargs = {"num_frames": part.shape[0]} if accepts_num_frames else {}
                frames = vae.decode(part, **kwargs).sample.float()
                images = pipeline.video_processor.postprocess(frames, output_type="np")  # type: ignore[attr-defined]
                # What VaeImageProcessor.numpy_to_pil does, keeping arrays.
                yield (images * 255).round().astype(np.uint8)
        finally:
            pipeline.maybe_free_model_hooks()  # type: ignore[attr-defined]


def _at_least_two_pixels(image: Image.Image) -> Image.Image:
    """The pipeline reflect-pads the image by one pixel before resizing it for the image encoder, which needs two
    pixels per side: a one-pixel line is widened to two (nearest: the same picture), anything else is unchanged."""
    if min(image.size) >= 2:
        return image
    return image.resize((max(2, image.width), max(2, image.height)), Image.Resampling.NEAREST)


def generator(seed: int) -> torch.Generator:
    """A CPU generator: the initial noise then depends only on the seed, not on the device."""
    return torch.Generator(device="cpu").manual_seed(seed)
