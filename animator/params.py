"""Animate request parameters: the request in plain values, what a model accepts (:class:`ModelFields`, told by
its family), and their resolution into the validated :class:`JobSpec` one job runs with (and which its id
stands for)."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from imagewire.limits import JOB_ID_RULE, MAX_JOB_ID_CHARS, is_job_id

from animator.interpolation import output_frames
from animator.limits import MIN_SIDE, EngineLimits
from animator.video import CONTRACT_PREFIX, VideoFormat
from imagewire_serving import errors
from imagewire_serving.errors import FieldViolation
from imagewire_serving.fields import RequestField, check_fields, unused_field

MAX_GUIDANCE_SCALE = 20.0


@dataclass(frozen=True)
class AnimateInput:
    """One animate request in plain values. None takes the model's default (MP4 for ``format``); a model rejects
    the optional fields it does not take when they are set."""

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
    prompt: str | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    segments: int | None = None
    interpolate: int | None = None
    # What decoding the request already found wrong (an enum value this server does not know), reported together
    # with the rest of the request's violations.
    violations: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True)
class GenerationParams:
    """Everything one generation needs besides the image, resolved and validated. The fields after
    ``decode_chunk_size`` belong to some families only: None where the model does not take them."""

    width: int
    height: int
    num_frames: int
    fps: int
    num_inference_steps: int
    seed: int
    decode_chunk_size: int
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None


# The request fields every model takes whose defaults are the model's; each family adds its own (ModelFields.own).
MODEL_DEFAULTS = ("width", "height", "num_frames", "fps", "num_inference_steps", "decode_chunk_size",
                  "preview_every")
# The optional request fields that only some families take: set for a model that does not, they are rejected.
FAMILY_FIELDS = tuple(field.name for field in dataclasses.fields(GenerationParams)[7:])


@dataclass(frozen=True)
class FrameGrid:
    """The frame counts a model can make: ``multiple * k + remainder``, at least ``minimum``. A video VAE that
    compresses time by 8 decodes 8k + 1 frames from k + 1 latent frames."""

    minimum: int = 2
    multiple: int = 0
    remainder: int = 0


@dataclass(frozen=True)
class ModelFields:
    """What one loaded model accepts, told by its family: the defaults of the fields every model takes
    (MODEL_DEFAULTS), its own fields with their defaults and bounds, and the grids its sizes, frame counts and
    decode chunks lie on."""

    family: str
    defaults: dict[str, Any]
    own: tuple[RequestField, ...] = ()
    size_multiple: int = 8
    frames: FrameGrid = FrameGrid()
    # decode_chunk_size must be a multiple of this (a video VAE's time compression); 1 for any.
    chunk_multiple: int = 1
    # The fewest denoising steps its scheduler can take.
    min_steps: int = 1


def request_fields(model: ModelFields, limits: EngineLimits) -> dict[str, RequestField]:
    """Every request field a model accepts, with its default and bounds: what is validated and reported. Each
    default is the model's own brought within the server's limits, so a request that leaves a field unset is
    never refused for it."""
    widest = limits.max_pixels_per_frame // MIN_SIDE
    defaults, frames, size, chunk = model.defaults, model.frames, model.size_multiple, model.chunk_multiple
    width, height = _fit_size(defaults["width"], defaults["height"], size, limits.max_pixels_per_frame)
    steps = max(model.min_steps, min(defaults["num_inference_steps"], limits.max_num_inference_steps))
    fields = (
        RequestField("image", None, 1, limits.image.max_bytes),
        RequestField("width", width, MIN_SIDE, widest, multiple_of=size),
        RequestField("height", height, MIN_SIDE, widest, multiple_of=size),
        RequestField("num_frames", _fit(defaults["num_frames"], frames, limits.max_num_frames), frames.minimum,
                     limits.max_num_frames, multiple_of=frames.multiple, remainder=frames.remainder),
        RequestField("fps", min(defaults["fps"], limits.max_fps), 1, limits.max_fps),
        RequestField("num_inference_steps", steps, model.min_steps, limits.max_num_inference_steps),
        # No maximum: the field's type (uint64) bounds it, and a double (FieldInfo.maximum) cannot hold 2^64 - 1.
        RequestField("seed", None, 0),
        RequestField("decode_chunk_size", min(defaults["decode_chunk_size"], limits.max_num_frames // chunk * chunk),
                     chunk, limits.max_num_frames, multiple_of=0 if chunk == 1 else chunk),
        RequestField("safety_check", False),
        RequestField("format", CONTRACT_PREFIX + VideoFormat.MP4_H264.name),
        RequestField("job_id", None, 0, MAX_JOB_ID_CHARS),
        RequestField("preview_every", min(defaults["preview_every"], limits.max_num_inference_steps), 0,
                     limits.max_num_inference_steps),
        RequestField("detach_grace_seconds", limits.detach_grace, 0.0, limits.max_detach_grace),
        RequestField("segments", 1, 1, limits.max_segments),
        RequestField("interpolate", 1, 1, limits.max_interpolate),
        *model.own,
    )
    return {field.name: field for field in fields}


def unservable(model: ModelFields, limits: EngineLimits) -> str | None:
    """Why the server's limits leave the model no request it can run (a start-up error naming the flag), or None."""
    if model.min_steps > limits.max_num_inference_steps:
        return (f"--max-num-inference-steps {limits.max_num_inference_steps}: {model.family} models take at least "
                f"{model.min_steps} steps")
    fewest = max(model.frames.minimum, model.frames.remainder, model.chunk_multiple)
    if fewest > limits.max_num_frames:
        return (f"--max-num-frames {limits.max_num_frames}: {model.family} models make at least {fewest} frames "
                "(and decode at least as many at once)")
    return None


def _fit(frames: int, grid: FrameGrid, limit: int) -> int:
    """A model's default frame count within the server's limit: the largest count on its grid up to the limit
    when the model's own default is longer (Wan's 81 frames under the default limit of 50)."""
    if frames <= limit or not grid.multiple:
        return min(frames, limit)
    return max(grid.minimum, (limit - grid.remainder) // grid.multiple * grid.multiple + grid.remainder)


def _fit_size(width: int, height: int, multiple: int, max_pixels: int) -> tuple[int, int]:
    """A model's default frame size within the server's pixel limit: scaled down, keeping its aspect ratio as
    nearly as the size grid allows, when it is larger (SVD-XT's 1024 x 576 under a limit of 512 x 512)."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    smallest = -(-MIN_SIDE // multiple) * multiple
    fitted = [max(smallest, int(side * scale) // multiple * multiple) for side in (width, height)]
    while fitted[0] * fitted[1] > max_pixels:  # the smallest side held at MIN_SIDE: narrow the other
        longer = 0 if fitted[0] >= fitted[1] else 1
        fitted[longer] -= multiple
    return fitted[0], fitted[1]


def job_id_violation(job_id: str, *, required: bool) -> FieldViolation | None:
    """Why ``job_id`` is not a valid job id (1 to 128 of A-Z a-z 0-9 - _ .), or None; "" is valid unless
    ``required``."""
    if not job_id:
        return FieldViolation("job_id", "job_id is required") if required else None
    if not is_job_id(job_id):
        return FieldViolation("job_id", f"job_id must be {JOB_ID_RULE}, not {errors.shown(job_id)}")
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
    # Clips of params.num_frames chained into one video, and the frame interpolation factor (1: none).
    segments: int = 1
    interpolate: int = 1

    @property
    def generated_frames(self) -> int:
        """The frames the model makes for the video: each segment after the first leaves out its first frame,
        which would repeat the previous segment's last."""
        return self.segments * (self.params.num_frames - 1) + 1

    @property
    def output_frames(self) -> int:
        """The frames of the video file, interpolated ones included."""
        return output_frames(self.generated_frames, self.interpolate)

    @property
    def output_fps(self) -> int:
        """The frame rate of the video file."""
        return self.params.fps * self.interpolate

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


def resolve(request: AnimateInput, model_id: str, model: ModelFields, limits: EngineLimits) -> JobSpec:
    """Apply the model's and the server's defaults and check every field against its bounds; one InvalidArgument
    names every violated field, including those the model does not take (the image is checked when decoded)."""
    fields = request_fields(model, limits)
    unused = [unused_field(name, model_id, model.family) for name in FAMILY_FIELDS
              if getattr(request, name) is not None and name not in fields]
    taken = [*MODEL_DEFAULTS, *(name for name in FAMILY_FIELDS if name in fields)]
    values = {name: fields[name].default if getattr(request, name) is None else getattr(request, name)
              for name in taken}
    grace = limits.detach_grace if request.detach_grace_seconds is None else request.detach_grace_seconds
    segments, interpolate = request.segments or 1, request.interpolate or 1
    violations = check_fields(fields, [*values.items(), ("seed", request.seed), ("detach_grace_seconds", grace),
                                       ("segments", request.segments), ("interpolate", request.interpolate)])
    if values["fps"] * interpolate > limits.max_fps and not violations:
        violations.append(FieldViolation("interpolate", (
            f"fps x interpolate = {values['fps'] * interpolate} frames a second in the video; the limit is "
            f"{limits.max_fps}")))
    if values["width"] * values["height"] > limits.max_pixels_per_frame and not violations:
        too_many = (f"width x height = {values['width'] * values['height']} pixels; the limit is "
                    f"{limits.max_pixels_per_frame}")
        violations += [FieldViolation("width", too_many), FieldViolation("height", too_many)]
    if "min_guidance_scale" in values and not any(v.field.endswith("_guidance_scale") for v in violations):
        violations += _check_guidance(values["min_guidance_scale"], values["max_guidance_scale"],
                                      set_max_only=request.min_guidance_scale is None)
    bad_id = job_id_violation(request.job_id, required=False)
    errors.collect([*request.violations, *violations, *unused, *([bad_id] if bad_id else [])])
    preview_every = values.pop("preview_every")
    seed = secrets.randbits(63) if request.seed is None else request.seed
    return JobSpec(
        model_id=model_id, image_sha256=hashlib.sha256(request.image).hexdigest(),
        params=GenerationParams(seed=seed, **values), format=request.format or VideoFormat.MP4_H264,
        safety_check=request.safety_check, preview_every=preview_every, detach_grace_seconds=grace,
        seed_given=request.seed is not None, segments=segments, interpolate=interpolate,
    )


def warm_up_params(model: ModelFields, limits: EngineLimits, *, default_shape: bool = False) -> GenerationParams:
    """What warm-up runs: the fewest steps the model takes, its own fields at their defaults; at the model's
    default size, frame count and decode chunk with ``default_shape``, else the smallest generation it can run."""
    if default_shape:
        request = AnimateInput(image=b"warm-up", num_inference_steps=model.min_steps, seed=0)
    else:
        fields = request_fields(model, limits)
        side = -(-MIN_SIDE // model.size_multiple) * model.size_multiple
        request = AnimateInput(image=b"warm-up", width=side, height=side, num_frames=model.frames.minimum,
                               num_inference_steps=model.min_steps, seed=0,
                               # An integer field's minimum is whole (RequestField types bounds as floats).
                               decode_chunk_size=fields["decode_chunk_size"].minimum)  # type: ignore[arg-type]
    return resolve(request, "warm-up", model, limits).params


def _check_guidance(low: float, high: float, *, set_max_only: bool) -> list[FieldViolation]:
    """The guidance ramp must rise from the first frame to the last; the violation names the field the caller
    set (max_guidance_scale when it alone was set below the default minimum).

    The pipeline encodes the image for classifier-free guidance when max_guidance_scale > 1 and, at every step,
    guides when the largest value of the ramp min -> max over the frames is > 1; the two decisions agree only
    when max_guidance_scale is the ramp's largest value.
    """
    if low <= high:
        return []
    if set_max_only:
        why = (f"must be >= min_guidance_scale ({low:g}, its default): the guidance rises from the first frame to "
               "the last")
        return [FieldViolation("max_guidance_scale", why)]
    why = f"must be <= max_guidance_scale ({high:g}): the guidance rises from the first frame to the last"
    return [FieldViolation("min_guidance_scale", why)]
