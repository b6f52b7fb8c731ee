"""How well a video model follows the motion rules, measured on held-out scenes through the served code path
(the SVD family's backend: the pipeline's denoising loop and its chunked decode) at the served defaults.

Each video's shape is followed by :mod:`animator.training.tracking`. Reported: the share of shapes moving within
30 degrees of their kind's direction, the first frame's PSNR against the input, the share of shapes whose mask
area stays within 25% of the first frame's, the rank correlation of distance with ``motion_bucket_id``, the
largest drift at bucket 0, and what ``fps`` and ``noise_aug_strength`` do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from animator.backend import Step
from animator.families.svd import SvdBackend
from animator.params import GenerationParams
from animator.quality import psnr
from animator.training.motion import DIRECTIONS, FULL_SPEED_BUCKET, SERVED_FPS, SERVED_FRAMES, Motion, seed_scene
from animator.training.settings import HELD_OUT_SEEDS
from animator.training.tracking import Track, track
from captioner.training.shapes import Scene, draw, shape_mask

BUCKETS = (0, 64, 128, 192, 255)
NOISE_AUG_STRENGTHS = (0.0, 0.02, 0.1, 0.3, 1.0)
MAX_ANGLE = 30.0
MAX_AREA_CHANGE = 0.25


def load(source: str) -> SvdBackend:
    """The model at ``source`` as the server loads it (float32 on the CPU)."""
    backend = SvdBackend.load(source, torch.device("cpu"), torch.float32)
    assert isinstance(backend, SvdBackend)
    return backend


def served_params(backend: SvdBackend, seed: int = 0, **changes: Any) -> GenerationParams:
    """The model's served defaults (its directory's request defaults over the pipeline's), with ``changes``."""
    fields = backend.accepts
    values = {name: fields.defaults[name] for name in ("width", "height", "num_frames", "fps",
                                                         "num_inference_steps", "decode_chunk_size")}
    values.update({field.name: field.default for field in fields.own})
    return dataclasses.replace(GenerationParams(seed=seed, **values), **changes)


def generate(backend: SvdBackend, image: Image.Image, params: GenerationParams) -> np.ndarray:
    """The video's frames, (n, h, w, 3) uint8, as the server makes them."""

    def ignore(_step: Step) -> None:
        pass

    with torch.inference_mode():
        latents = backend.denoise(image, params, ignore)
        return np.concatenate(list(backend.decode(latents, params)))


def held_out_scene(seed: int) -> Scene:
    """A held-out scene with room for the longest evaluated path (bucket 255 at the served frame rate)."""
    return seed_scene(seed, Motion(FULL_SPEED_BUCKET, SERVED_FPS, SERVED_FRAMES))


@dataclass(frozen=True)
class Followed:
    """One video of a scene: the shape's track, the first frame's PSNR against the input, and the first frame's
    mean absolute colour error (0-255) over the background's pixels and over the shape's."""

    track: Track
    psnr: float
    background_error: float
    shape_error: float


def follow(backend: SvdBackend, scene: Scene, params: GenerationParams) -> Followed:
    """Make the video of ``scene`` and measure it."""
    image = draw(scene, params.width)
    frames = generate(backend, image, params)
    shape = scene.shapes[0]
    error = np.abs(frames[0].astype(np.float64) - np.asarray(image, dtype=np.float64)).mean(-1)
    inside = np.asarray(shape_mask(scene, params.width)) > 0
    return Followed(track(frames, shape.rgb, scene.background_rgb), psnr(frames[0], np.asarray(image)),
                    float(error[~inside].mean()), float(error[inside].mean()))


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank."""
    array = np.asarray(values, dtype=np.float64)
    order = array.argsort(kind="stable")
    result = np.empty(len(array))
    result[order] = np.arange(len(array))
    for value in np.unique(array):
        result[array == value] = result[array == value].mean()
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN where either side is constant)."""
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _mean(values: Sequence[float]) -> float:
    """The mean of the values that are numbers (a track that lost its shape in some frame has NaN distances)."""
    numbers = [value for value in values if not math.isnan(value)]
    return round(float(np.mean(numbers)), 4) if numbers else math.nan


def evaluate(backend: SvdBackend, scenes: int, side_scenes: int) -> dict[str, Any]:
    """The held-out figures over the first ``scenes`` held-out seeds (``side_scenes`` of them for the fps and
    noise augmentation checks)."""
    seeds = HELD_OUT_SEEDS[:scenes]
    defaults = served_params(backend)
    at_default = {seed: follow(backend, held_out_scene(seed), served_params(backend, seed)) for seed in seeds}
    angles = {seed: f.track.angle_from(DIRECTIONS[held_out_scene(seed).shapes[0].shape])
              for seed, f in at_default.items()}
    by_bucket = {bucket: {seed: follow(backend, held_out_scene(seed),
                                       served_params(backend, seed, motion_bucket_id=bucket)).track
                          for seed in seeds} for bucket in BUCKETS}
    widths = {seed: held_out_scene(seed).shapes[0].extent * defaults.width for seed in seeds}
    correlations = [spearman(BUCKETS, [by_bucket[b][seed].distance for b in BUCKETS]) for seed in seeds]
    side = seeds[:side_scenes]
    fps_distance = {fps: _mean([follow(backend, held_out_scene(s), served_params(backend, s, fps=fps)).track.distance
                                / widths[s] for s in side]) for fps in (defaults.fps, 2 * defaults.fps)}
    aug_psnr = {strength: _mean([follow(backend, held_out_scene(s),
                                        served_params(backend, s, noise_aug_strength=strength)).psnr for s in side])
                for strength in NOISE_AUG_STRENGTHS}
    kinds = sorted(DIRECTIONS)
    return {
        "held_out_seeds": [seeds.start, seeds.stop],
        "served_defaults": {name: getattr(defaults, name) for name in (
            "width", "height", "num_frames", "fps", "num_inference_steps", "motion_bucket_id",
            "noise_aug_strength", "min_guidance_scale", "max_guidance_scale")},
        "direction_within_30_degrees": _mean([angle <= MAX_ANGLE for angle in angles.values()]),
        "direction_by_kind": {kind: _mean([angles[s] <= MAX_ANGLE for s in seeds
                                           if held_out_scene(s).shapes[0].shape == kind]) for kind in kinds},
        "median_angle_error_degrees": round(float(np.median(list(angles.values()))), 2),
        "first_frame_psnr_db": {"mean": _mean([f.psnr for f in at_default.values()]),
                                "min": round(min(f.psnr for f in at_default.values()), 2)},
        "first_frame_colour_error": {"background": _mean([f.background_error for f in at_default.values()]),
                                     "shape": _mean([f.shape_error for f in at_default.values()])},
        "area_within_25_percent": _mean([f.track.area_change() <= MAX_AREA_CHANGE for f in at_default.values()]),
        "distance_vs_motion_bucket_spearman": {"mean": _mean([c for c in correlations if not math.isnan(c)]),
                                               "constant": sum(math.isnan(c) for c in correlations)},
        "widths_moved_by_bucket": {bucket: _mean([by_bucket[bucket][s].distance / widths[s] for s in seeds])
                                   for bucket in BUCKETS},
        "shapes_lost_in_some_frame": sum(math.isnan(f.track.distance) for f in at_default.values()),
        "bucket_0_largest_drift_px": round(max(tr.farthest for tr in by_bucket[0].values()
                                               if not math.isinf(tr.farthest)), 3),
        "bucket_0_lost_in_some_frame": sum(math.isinf(tr.farthest) for tr in by_bucket[0].values()),
        "bucket_0_share_within_1_px": _mean([tr.farthest <= 1.0 for tr in by_bucket[0].values()]),
        "widths_moved_by_fps": fps_distance,
        "first_frame_psnr_by_noise_aug_strength": aug_psnr,
    }
