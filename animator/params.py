"""Animate request parameters: the request in plain values, a model's defaults, and their resolution into the
validated :class:`JobSpec` one job runs with (and which its id stands for)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from animator.limits import MIN_SIDE, EngineLimits
from animator.video import CONTRACT_PREFIX, VideoFormat
from imagewire_serving import errors
from imagewire_serving.errors import FieldViolation
from imagewire_serving.fields import RequestField, check_fields

MAX_MOTION_BUCKET_ID = 1023
MAX_GUIDANCE_SCALE = 20.0
# Job ids travel in metadata (x-imagewire-job-id) and logs: short, and safe in any header or URL.
MAX_JOB_ID_CHARS = 128
_JOB_ID = re.compile(r"[A-Za-z0-9._-]+")


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
    # "" lets the server assign one.
    job_id: str = ""
    preview_every: int | None = None
    detach_grace_seconds: float | None = None


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
    # Five previews over SVD-XT's 25 steps.
    preview_every: int = 5


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
        RequestField("job_id", None, 0, MAX_JOB_ID_CHARS),
        RequestField("preview_every", defaults.preview_every, 0, limits.max_num_inference_steps),
        RequestField("detach_grace_seconds", limits.detach_grace, 0.0, limits.max_detach_grace),
    )
    return {field.name: field for field in fields}


def job_id_violation(job_id: str, *, required: bool) -> FieldViolation | None:
    """Why ``job_id`` is not a valid job id (1 to 128 of A-Z a-z 0-9 - _ .), or None; "" is valid unless
    ``required``."""
    if not job_id:
        return FieldViolation("job_id", "job_id is required") if required else None
    if len(job_id) > MAX_JOB_ID_CHARS or not _JOB_ID.fullmatch(job_id):
        return FieldViolation("job_id", f"job_id must be 1 to {MAX_JOB_ID_CHARS} characters from A-Z, a-z, 0-9, "
                                        f"'-', '_' and '.', not {errors.shown(job_id)}")
    return None


@dataclass(frozen=True)
class JobSpec:
    """A request resolved and validated: what one job generates and how it runs.

    A job id stands for exactly one spec: :meth:`differences` compares every resolved value (defaults applied,
    so leaving a field out and sending its default agree), the image by digest and the seed as requested.
    """

    model_id: str
    image_sha256: str
    params: GenerationParams
    format: VideoFormat
    safety_check: bool
    preview_every: int
    detach_grace_seconds: float
    # False when the server chose the seed: a retry without one is then the same request.
    seed_given: bool

    def differences(self, other: JobSpec) -> list[str]:
        """The request fields on which two specs disagree, by name; empty when they are the same job."""
        mine, theirs = self._identity(), other._identity()
        return [name for name, value in mine.items() if theirs.get(name) != value]

    def _identity(self) -> dict[str, Any]:
        # Generic over the fields, so a field added to GenerationParams or to the spec is compared too.
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values.update(dataclasses.asdict(values.pop("params")))
        values["image"] = values.pop("image_sha256")
        if not values.pop("seed_given"):
            values["seed"] = None
        return values


def resolve(request: AnimateInput, model_id: str, defaults: ModelDefaults, limits: EngineLimits) -> JobSpec:
    """Apply the model's and the server's defaults and check every field against its bounds; one InvalidArgument
    names every violated field (the image is checked when it is decoded)."""
    fields = request_fields(defaults, limits)
    values = {name: getattr(defaults, name) if getattr(request, name) is None else getattr(request, name)
              for name in ModelDefaults.__dataclass_fields__}
    grace = limits.detach_grace if request.detach_grace_seconds is None else request.detach_grace_seconds
    violations = check_fields(fields, [*values.items(), ("seed", request.seed), ("detach_grace_seconds", grace)])
    if values["width"] * values["height"] > limits.max_pixels_per_frame and not violations:
        too_many = (f"width x height = {values['width'] * values['height']} pixels; the limit is "
                    f"{limits.max_pixels_per_frame}")
        violations += [FieldViolation("width", too_many), FieldViolation("height", too_many)]
    if not any(violation.field.endswith("_guidance_scale") for violation in violations):
        violations += _check_guidance(values["min_guidance_scale"], values["max_guidance_scale"])
    bad_id = job_id_violation(request.job_id, required=False)
    errors.collect([*violations, *([bad_id] if bad_id else [])])
    preview_every = values.pop("preview_every")
    values["decode_chunk_size"] = min(values["decode_chunk_size"], values["num_frames"])
    seed = secrets.randbits(63) if request.seed is None else request.seed
    return JobSpec(
        model_id=model_id, image_sha256=hashlib.sha256(request.image).hexdigest(),
        params=GenerationParams(seed=seed, **values), format=request.format or VideoFormat.MP4_H264,
        safety_check=request.safety_check, preview_every=preview_every, detach_grace_seconds=grace,
        seed_given=request.seed is not None,
    )


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
