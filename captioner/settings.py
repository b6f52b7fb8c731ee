"""The captioner's settings: one frozen dataclass built from flags with IMAGEWIRE_CAPTIONER_* fallbacks."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from captioner.engine import EngineLimits
from imagewire_serving.images import ImageLimits
from imagewire_serving.settings import ServerSettings, add_server_arguments, env_option, server_settings_from_args

ENV_PREFIX = "IMAGEWIRE_CAPTIONER"
DEFAULT_PORT = 50051


@dataclass(frozen=True)
class CaptionerSettings:
    """Everything the captioner process is configured with, validated at start-up."""

    server: ServerSettings = field(default_factory=ServerSettings)
    limits: EngineLimits = field(default_factory=EngineLimits)

    def __post_init__(self) -> None:
        limits = self.limits
        for name in ("max_new_tokens_limit", "num_beams_limit", "max_batch_size", "max_queue"):
            if getattr(limits, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1")
        if not 1 <= limits.default_max_new_tokens <= limits.max_new_tokens_limit:
            raise ValueError("--default-max-new-tokens must be within 1..--max-new-tokens-limit")
        if not 1 <= limits.default_num_beams <= limits.num_beams_limit:
            raise ValueError("--default-num-beams must be within 1..--num-beams-limit")
        if limits.max_batch_delay_s < 0:
            raise ValueError("--max-batch-delay-ms must be >= 0")
        if limits.usd_per_input_pixel < 0:
            raise ValueError("--usd-per-input-pixel must be >= 0")
        if limits.image.max_pixels < 1 or limits.image.max_bytes < 1:
            raise ValueError("image limits must be >= 1")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagewire-captioner", description="Serve image captioning (BLIP via transformers) over gRPC."
    )
    add_server_arguments(p, env_prefix=ENV_PREFIX, default_port=DEFAULT_PORT)
    d = EngineLimits()

    def option(flag: str, **kwargs: object) -> None:
        env_option(p, flag, env_prefix=ENV_PREFIX, **kwargs)  # type: ignore[arg-type]

    option("--max-batch-size", type=int, default=d.max_batch_size, help="most requests run together")
    option("--max-batch-delay-ms", type=float, default=d.max_batch_delay_s * 1000,
           help="longest wait for a batch to fill")
    option("--max-queue", type=int, default=d.max_queue, help="waiting requests before RESOURCE_EXHAUSTED")
    option("--default-max-new-tokens", type=int, default=d.default_max_new_tokens, help="caption length default")
    option("--max-new-tokens-limit", type=int, default=d.max_new_tokens_limit, help="largest max_new_tokens")
    option("--default-num-beams", type=int, default=d.default_num_beams, help="beam width default")
    option("--num-beams-limit", type=int, default=d.num_beams_limit, help="largest num_beams")
    option("--max-image-pixels", type=int, default=d.image.max_pixels, help="largest decoded image")
    option("--usd-per-input-pixel", type=float, default=d.usd_per_input_pixel, help="price of one input pixel")
    return p


def from_args(argv: Sequence[str] | None = None) -> CaptionerSettings:
    args = parser().parse_args(argv)
    return CaptionerSettings(
        server=server_settings_from_args(args),
        limits=EngineLimits(
            image=ImageLimits(max_pixels=args.max_image_pixels),
            default_max_new_tokens=args.default_max_new_tokens,
            max_new_tokens_limit=args.max_new_tokens_limit,
            default_num_beams=args.default_num_beams,
            num_beams_limit=args.num_beams_limit,
            max_batch_size=args.max_batch_size,
            max_batch_delay_s=args.max_batch_delay_ms / 1000,
            max_queue=args.max_queue,
            usd_per_input_pixel=args.usd_per_input_pixel,
        ),
    )
