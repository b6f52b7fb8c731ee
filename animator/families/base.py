"""What every video family shares: loading its diffusers pipeline (weights checked, placed, dtype chosen), the
denoising loop run by the pipeline itself with a per-step callback and the scheduler's clean-latent estimate, the
preview projection fitted at load, and the defaults a model directory may override.

A family subclasses :class:`PipelineBackend` and says only what differs: the ``model_index.json`` class it
serves, which request fields it takes with which defaults (read from the pipeline, its configs and its call
signature), the pipeline arguments of a request, how its scheduler's step gives the clean latents, how its VAE
maps images to latents (for previews) and how it decodes latents chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from animator.backend import Step, StepCallback, generator
from animator.families.loading import load_pipeline, place
from animator.params import MODEL_DEFAULTS, GenerationParams, ModelFields
from animator.preview import LatentCodec, LatentProjection
from imagewire_serving.compiling import Part
from imagewire_serving.errors import FieldViolation
from imagewire_serving.provenance import ModelFiles, model_files

_LOGGER = logging.getLogger(__name__)

# A model directory may carry request defaults suited to it (see overrides); the tiny and bench builds do.
DEFAULTS_FILE = "imagewire_animate.json"
# Five previews over a model's default number of steps.
PREVIEWS_PER_VIDEO = 5
# The families by the model_index.json class they serve, filled as their modules are imported.
REGISTRY: dict[str, type[PipelineBackend]] = {}


class PipelineBackend:
    """A :class:`~animator.backend.VideoBackend` over one diffusers image-to-video pipeline."""

    family: ClassVar[str]
    # The pipeline class named by model_index.json's _class_name that this family serves.
    pipeline_class: ClassVar[str]
    # The dtype the family's models were trained in, used on CUDA instead of float16 (None: float16 is fine).
    trained_dtype: ClassVar[torch.dtype | None] = None
    # Components kept in float32 whatever the dtype (as the family's authors run them).
    float32_components: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "pipeline_class" in cls.__dict__:  # a family, not a shared intermediate class
            REGISTRY[cls.pipeline_class] = cls

    def __init__(self, model_id: str, pipeline: Any, device: torch.device, dtype: torch.dtype,
                 accepts: ModelFields, projection: LatentProjection, files: ModelFiles) -> None:
        self.model_id = model_id
        self.files = files
        self.pipeline = pipeline
        self.device = device
        self.dtype = dtype
        self.accepts = accepts
        self.projection = projection

    @classmethod
    def load(cls, source: str, device: torch.device, dtype: torch.dtype, *, model_id: str | None = None,
             cpu_offload: bool = False, dtype_chosen: bool = True) -> PipelineBackend:
        """Load through from_pretrained with every weight checked (a ValueError names what does not fit), place
        it on ``device`` (``cpu_offload``: diffusers' model CPU offload on CUDA), and fit the preview projection.

        ``dtype_chosen`` False: ``dtype`` is the server's automatic choice, which the family may replace by the
        dtype its models were trained in; an operator's explicit --dtype is kept."""
        import diffusers

        dtype = dtype if dtype_chosen else cls.weights_dtype(device, dtype)
        pipeline = load_pipeline(getattr(diffusers, cls.pipeline_class), source, dtype,
                                 float32=cls.float32_components)
        place(pipeline, source, device, dtype, cpu_offload=cpu_offload)
        accepts = with_overrides(cls.model_fields(pipeline), source)
        projection = LatentProjection.fit(cls.latent_codec(pipeline), device, pipeline.vae.dtype,
                                          size=cls.calibration_size(pipeline))
        pipeline.maybe_free_model_hooks()  # with CPU offload, the VAE goes back to the CPU after the fit
        return cls(model_id or source, pipeline, device, dtype, accepts, projection, model_files(source))

    def compile_parts(self) -> list[Part]:
        """The denoiser (run twice per step with guidance, every step) and the VAE decoder (every frame)."""
        return self._parts

    @functools.cached_property
    def _parts(self) -> list[Part]:
        denoiser = getattr(self.pipeline, "unet", None) or getattr(self.pipeline, "transformer", None)
        parts = [Part("denoiser", denoiser)] if denoiser is not None else []
        # The decoder's batch is a chunk of frames: a shorter last chunk shares the graph of the full ones.
        return [*parts, Part("vae decoder", self.pipeline.vae.decoder, batch_dim=True)]

    @classmethod
    def weights_dtype(cls, device: torch.device, dtype: torch.dtype) -> torch.dtype:
        """The dtype to load in: the family's training dtype where the server would use float16 on CUDA."""
        if device.type == "cuda" and dtype == torch.float16 and cls.trained_dtype not in (None, dtype):
            _LOGGER.info("%s models run in %s on CUDA, the dtype they were trained in", cls.family, cls.trained_dtype)
            return cls.trained_dtype
        return dtype

    # What a family says -----------------------------------------------------------------------------------------

    @classmethod
    def model_fields(cls, pipeline: Any) -> ModelFields:
        """The request fields the loaded pipeline takes, with the defaults its configs and signature give."""
        raise NotImplementedError

    @classmethod
    def latent_codec(cls, pipeline: Any) -> LatentCodec:
        """The VAE's image -> latent -> image maps, latents as the denoiser holds them (for the preview fit)."""
        raise NotImplementedError

    @classmethod
    def calibration_size(cls, pipeline: Any) -> int:
        """The preview calibration images' side: 16 latent pixels across at least."""
        return max(128, 16 * int(pipeline.video_processor.config.vae_scale_factor))

    def pipeline_arguments(self, params: GenerationParams) -> dict[str, Any]:
        """The pipeline call's arguments for a request, besides the image, generator, output type and callback."""
        raise NotImplementedError

    def clean_estimate(self, scheduler: Any, output: Any, args: tuple[Any, ...]) -> torch.Tensor | None:
        """From one scheduler.step call (its output and positional arguments), the clean latents as
        (frames, channels, h, w), or None."""
        return None

    def ready_to_decode(self, latents: torch.Tensor, params: GenerationParams,
                        noise: torch.Generator) -> torch.Tensor:
        """The pipeline's latent output turned into what the VAE decodes, drawing any further noise from the
        generator the denoising used (as the plain pipeline call goes on to)."""
        return latents

    def decode(self, latents: torch.Tensor, params: GenerationParams) -> Generator[np.ndarray, None, None]:
        raise NotImplementedError

    def violations(self, params: GenerationParams) -> list[FieldViolation]:
        return []

    # What every family does alike -------------------------------------------------------------------------------

    def denoise(self, image: Image.Image, params: GenerationParams, on_step: StepCallback,
                noise: torch.Generator | None = None) -> torch.Tensor:
        total = params.num_inference_steps
        scheduler = self.pipeline.scheduler
        scheduler_step = scheduler.step
        estimate: list[torch.Tensor | None] = [None]

        def step(*args: Any, **kwargs: Any) -> Any:
            # Pipelines keep only the next sample; the clean estimate comes from the step itself.
            output = scheduler_step(*args, **kwargs)
            estimate[0] = self.clean_estimate(scheduler, output, args)
            return output

        def step_end(_pipeline: object, index: int, _timestep: object, _tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(Step(index + 1, total, estimate[0]))
            return {}

        noise = generator(params.seed) if noise is None else noise
        scheduler.step = step  # for this call only: an instance attribute shadowing the method
        try:
            latents = self.pipeline(
                at_least_two_pixels(image), **self.pipeline_arguments(params), generator=noise,
                output_type="latent", callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=[],
            ).frames
        except BaseException:
            self.pipeline.maybe_free_model_hooks()  # a stopped loop skips the pipeline's own clean-up
            raise
        finally:
            del scheduler.step
        return self.ready_to_decode(latents, params, noise)

    def preview_frames(self, denoised: torch.Tensor) -> np.ndarray:
        return self.projection.frames(denoised)


def flow_estimate(scheduler: Any, args: tuple[Any, ...]) -> torch.Tensor:
    """The clean latents of a flow-matching step (FlowMatchEulerDiscreteScheduler, UniPC with flow sigmas): the
    model predicts the velocity v = noise - x0 and x_t = (1 - sigma) x0 + sigma noise, so x0 = x_t - sigma v.
    Called after the step, which has advanced the scheduler's step index past this step's sigma."""
    model_output, _timestep, sample = args[:3]
    sigma = float(scheduler.sigmas[scheduler.step_index - 1])
    return (sample.float() - sigma * model_output.float())[0].transpose(0, 1)


def call_default(pipeline: Any, name: str) -> Any:
    """The default of one argument of the pipeline's __call__: the family's defaults as its authors set them."""
    return inspect.signature(type(pipeline).__call__).parameters[name].default


def default_previews(steps: int) -> int:
    """A preview every this many steps: about five over the default number of steps."""
    return max(1, steps // PREVIEWS_PER_VIDEO)


def with_overrides(fields: ModelFields, source: str) -> ModelFields:
    """``fields`` with the defaults an ``imagewire_animate.json`` in the model directory sets (by field name)."""
    path = Path(source) / DEFAULTS_FILE
    if not path.is_file():
        return fields
    values = json.loads(path.read_text())
    defaults = {**fields.defaults, **{name: values[name] for name in MODEL_DEFAULTS if name in values}}
    own = tuple(dataclasses.replace(field, default=values.get(field.name, field.default)) for field in fields.own)
    return dataclasses.replace(fields, defaults=defaults, own=own)


def onload(module: Any) -> None:
    """Under model CPU offload, move ``module`` to the GPU as diffusers' ``apply_forward_hook`` does for
    ``decode``: for code that calls the module's parts directly."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(module)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] as uint8, as VaeImageProcessor.numpy_to_pil rounds them."""
    return (images * 255).round().astype(np.uint8)


def at_least_two_pixels(image: Image.Image) -> Image.Image:
    """SVD's pipeline reflect-pads the image by one pixel before resizing it for the image encoder, which needs
    two pixels per side: a one-pixel line is widened to two (nearest: the same picture), anything else is
    unchanged."""
    if min(image.size) >= 2:
        return image
    return image.resize((max(2, image.width), max(2, image.height)), Image.Resampling.NEAREST)
