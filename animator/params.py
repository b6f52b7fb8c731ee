"""Animate request parameters: the request in plain values, a model's defaults, and their resolution into the
validated parameters one generation runs with."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from animator.limits import MIN_SIDE, EngineLimits
from animator.video import CONTRACT_PREFIX, VideoFormat
from imagewire_serving import errors
from imagewire_serving.errors import FieldViolation
from imagewire_serving.fields import RequestField, check_fields

MAX_MOTION_BUCKET_ID = 1023
MAX_GUIDANCE_SCALE = 20.0


@dataclass(frozen=True)
class AnimateInput:
    """One animate request in plain values. None takes the model's default (MP4 for ``format``)."""

    image: bytes
    model_id: str = ""
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    num_inference_steps: int | None = None
    seed: int | None = None
    decode_chunk_size: int | None = None
    safety_check: bool = False
    format: VideoFormat | None = None
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None


@dataclass(frozen=True)
class ModelDefaults:
    """Request defaults for one model. The SVD-XT values unless the model directory says otherwise."""

    width: int = 1024
    height: int = 576
    num_frames: int = 25
    fps: int = 6
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    num_inference_steps: int = 25
    decode_chunk_size: int = 8
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0


@dataclass(frozen=True)
class GenerationParams:
    """Everything one generation needs besides the image, resolved and validated."""

    width: int
    height: int
    num_frames: int
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    num_inference_steps: int
    seed: int
    decode_chunk_size: int
    min_guidance_scale: float
    max_guidance_scale: float

    @property
    def pipeline_fps(self) -> int:
        """The pipeline's ``fps`` argument that makes the UNet see ``fps``.

        StableVideoDiffusionPipeline passes ``fps - 1`` to the UNet's added time ids (SVD was micro-conditioned
        on that value; the reference conditions on 6 and writes 7 fps). We condition the model on exactly the
        requested value and write the same value into the container, so we add the 1 back.
        """
        return self.fps + 1


def request_fields(defaults: ModelDefaults, limits: EngineLimits) -> dict[str, RequestField]:
    """Every request field a video model accepts, with its default and bounds: what is validated and reported."""
    widest = limits.max_pixels_per_frame // MIN_SIDE
    fields = (
        RequestField("image", None, 1, limits.image.max_bytes),
        RequestField("width", defaults.width, MIN_SIDE, widest, multiple_of=8),
        RequestField("height", defaults.height, MIN_SIDE, widest, multiple_of=8),
        # Two at least: with one frame the guidance ramp is its first value alone, and the pipeline, which decided
        # on classifier-free guidance from the last value, would fail (see _check_guidance).
        RequestField("num_frames", defaults.num_frames, 2, limits.max_num_frames),
        RequestField("fps", defaults.fps, 1, limits.max_fps),
        RequestField("motion_bucket_id", defaults.motion_bucket_id, 0, MAX_MOTION_BUCKET_ID),
        RequestField("noise_aug_strength", defaults.noise_aug_strength, 0.0, 1.0),
        RequestField("num_inference_steps", defaults.num_inference_steps, 1, limits.max_num_inference_steps),
        RequestField("seed", None, 0, 2**64 - 1),
        RequestField("decode_chunk_size", defaults.decode_chunk_size, 1, limits.max_num_frames),
        RequestField("safety_check", False),
        RequestField("format", CONTRACT_PREFIX + VideoFormat.MP4_H264.name),
        RequestField("min_guidance_scale", defaults.min_guidance_scale, 0.0, MAX_GUIDANCE_SCALE),
        RequestField("max_guidance_scale", defaults.max_guidance_scale, 0.0, MAX_GUIDANCE_SCALE),
    )
    return {field.name: field for field in fields}


def resolve(request: AnimateInput, defaults: ModelDefaults, limits: EngineLimits) -> tuple[GenerationParams,
                                                                                        VideoFormat]:
    """Apply the model's defaults and check every field against its bounds; one InvalidArgument names every
    violated field."""
    fields = request_fields(defaults, limits)
    values = {name: getattr(defaults, name) if getattr(request, name) is None else getattr(request, name)
              for name in ModelDefaults.__dataclass_fields__}
    violations = check_fields(fields, [*values.items(), ("seed", request.seed)])
    if values["width"] * values["height"] > limits.max_pixels_per_frame and not violations:
        too_many = (f"width x height = {values['width'] * values['height']} pixels; the limit is "
                    f"{limits.max_pixels_per_frame}")
        violations += [FieldViolation("width", too_many), FieldViolation("height", too_many)]
    if not any(violation.field.endswith("_guidance_scale") for violation in violations):
        violations += _check_guidance(values["min_guidance_scale"], values["max_guidance_scale"])
    errors.collect(violations)
    values["decode_chunk_size"] = min(values["decode_chunk_size"], values["num_frames"])
    seed = secrets.randbits(63) if request.seed is None else request.seed
    return GenerationParams(seed=seed, **values), request.format or VideoFormat.MP4_H264


def _check_guidance(low: float, high: float) -> list[FieldViolation]:
    """The guidance ramp must rise from the first frame to the last.

    The pipeline encodes the image for classifier-free guidance when max_guidance_scale > 1 and, at every step,
    guides when the largest value of the ramp min -> max over the frames is > 1; the two decisions agree only
    when max_guidance_scale is the ramp's largest value.
    """
    if low <= high:
        return []
    why = f"must be <= max_guidance_scale ({high:g}): the guidance rises from the first frame to the last"
    return [FieldViolation("min_guidance_scale", why)]
