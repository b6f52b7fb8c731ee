"""The animator's settings: one frozen dataclass built from flags with IMAGEWIRE_ANIMATOR_* fallbacks."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from animator.engine import EngineLimits
from imagewire_serving.images import ImageLimits
from imagewire_serving.settings import ServerSettings, add_server_arguments, env_option, server_settings_from_args

ENV_PREFIX = "IMAGEWIRE_ANIMATOR"
DEFAULT_PORT = 50052


@dataclass(frozen=True)
class AnimatorSettings:
    """Everything the animator process is configured with, validated at start-up."""

    server: ServerSettings = field(default_factory=ServerSettings)
    limits: EngineLimits = field(default_factory=EngineLimits)
    # Keep model components on the CPU until they run (CUDA only): SVD-XT then fits a 24 GB card.
    cpu_offload: bool = False
    # A StableDiffusionSafetyChecker directory or hub id; None = no checker (results say no check ran).
    safety_checker: str | None = None

    def __post_init__(self) -> None:
        limits = self.limits
        for name in ("max_pixels_per_frame", "max_num_frames", "max_num_inference_steps", "max_fps", "max_queue",
                     "max_pending_bytes"):
            if getattr(limits, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if limits.max_pixels_per_frame < 64 * 64:
            raise ValueError("--max-pixels-per-frame must allow at least 64x64")
        if limits.usd_per_output_pixel < 0:
            raise ValueError("--usd-per-output-pixel must be >= 0")
        if limits.image.max_pixels < 1 or limits.image.max_bytes < 1:
            raise ValueError("image limits must be >= 1")
        if self.safety_checker is not None and not self.safety_checker.strip():
            raise ValueError("--safety-checker must name a directory or hub id")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagewire-animator",
        description="Serve image-to-video (Stable Video Diffusion via diffusers) over gRPC, streaming the video.",
    )
    add_server_arguments(p, env_prefix=ENV_PREFIX, default_port=DEFAULT_PORT)
    d = EngineLimits()

    def option(flag: str, **kwargs: object) -> None:
        env_option(p, flag, env_prefix=ENV_PREFIX, **kwargs)  # type: ignore[arg-type]

    option("--max-queue", type=int, default=d.max_queue, help="waiting requests before RESOURCE_EXHAUSTED")
    option("--max-pixels-per-frame", type=int, default=d.max_pixels_per_frame, help="largest width x height")
    option("--max-num-frames", type=int, default=d.max_num_frames, help="largest num_frames")
    option("--max-num-inference-steps", type=int, default=d.max_num_inference_steps,
           help="largest num_inference_steps")
    option("--max-fps", type=int, default=d.max_fps, help="largest fps")
    option("--max-image-pixels", type=int, default=d.image.max_pixels, help="largest decoded input image")
    option("--usd-per-output-pixel", type=float, default=d.usd_per_output_pixel,
           help="price of one output pixel (width x height x frames)")
    option("--cpu-offload", boolean=True, default=False,
           help="keep model components on the CPU until they run (CUDA; for 24 GB cards)")
    option("--safety-checker", help="StableDiffusionSafetyChecker directory or hub id, run on input images on request")
    return p


def from_args(argv: Sequence[str] | None = None) -> AnimatorSettings:
    args = parser().parse_args(argv)
    return AnimatorSettings(
        server=server_settings_from_args(args),
        limits=EngineLimits(
            image=ImageLimits(max_pixels=args.max_image_pixels),
            max_pixels_per_frame=args.max_pixels_per_frame,
            max_num_frames=args.max_num_frames,
            max_num_inference_steps=args.max_num_inference_steps,
            max_fps=args.max_fps,
            max_queue=args.max_queue,
            usd_per_output_pixel=args.usd_per_output_pixel,
        ),
        cpu_offload=args.cpu_offload,
        safety_checker=args.safety_checker or None,
    )
