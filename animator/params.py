"""Animate request parameters: the request in plain values, a model's defaults, and their resolution into the
validated parameters one generation runs with."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from animator.limits import MIN_SIDE, EngineLimits
from animator.video import VideoFormat
from imagewire_serving import errors
from imagewire_serving.errors import FieldViolation

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


def resolve(request: AnimateInput, defaults: ModelDefaults, limits: EngineLimits) -> tuple[GenerationParams,
                                                                                        VideoFormat]:
    """Apply the model's defaults and check every field against the limits; one InvalidArgument names every
    violated field."""
    values = {name: getattr(defaults, name) if getattr(request, name) is None else getattr(request, name)
              for name in ModelDefaults.__dataclass_fields__}
    violations = _check_size(values["width"], values["height"], limits)
    for name, (low, high) in _bounds(limits).items():
        value = values[name]
        if not (math.isfinite(value) and low <= value <= high):
            violations.append(FieldViolation(name, f"must be {low}..{high}, not {value}"))
    seed = secrets.randbits(63) if request.seed is None else request.seed
    if not 0 <= seed < 2**64:
        violations.append(FieldViolation("seed", "must be an unsigned 64-bit integer"))
    errors.collect(violations)
    values["decode_chunk_size"] = min(values["decode_chunk_size"], values["num_frames"])
    return GenerationParams(seed=seed, **values), request.format or VideoFormat.MP4_H264


def _check_size(width: int, height: int, limits: EngineLimits) -> list[FieldViolation]:
    violations = [
        FieldViolation(name, f"must be a multiple of 8 and at least {MIN_SIDE}, not {side}")
        for name, side in (("width", width), ("height", height))
        if side % 8 or side < MIN_SIDE
    ]
    if width * height > limits.max_pixels_per_frame:
        too_many = f"width x height = {width * height} pixels; the limit is {limits.max_pixels_per_frame}"
        violations += [FieldViolation("width", too_many), FieldViolation("height", too_many)]
    return violations


def _bounds(limits: EngineLimits) -> dict[str, tuple[float, float]]:
    """The inclusive range of each numeric field."""
    return {
        "num_frames": (1, limits.max_num_frames),
        "fps": (1, limits.max_fps),
        "motion_bucket_id": (0, MAX_MOTION_BUCKET_ID),
        "noise_aug_strength": (0.0, 1.0),
        "num_inference_steps": (1, limits.max_num_inference_steps),
        "decode_chunk_size": (1, limits.max_num_frames),
        "min_guidance_scale": (0.0, MAX_GUIDANCE_SCALE),
        "max_guidance_scale": (0.0, MAX_GUIDANCE_SCALE),
    }
