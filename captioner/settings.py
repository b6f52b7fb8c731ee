"""The captioner's settings: the shared server settings and the engine limits, from flags and IMAGEWIRE_CAPTIONER_*."""

from __future__ import annotations

from dataclasses import dataclass, field

from captioner.limits import EngineLimits
from imagewire_serving.settings import ServiceSettings


@dataclass(frozen=True)
class CaptionerSettings(ServiceSettings):
    """Everything the captioner process is configured with, checked when built."""

    prog = "imagewire-captioner"
    description = ("Serve image captioning over gRPC: BLIP, GIT, Florence-2, Idefics3/SmolVLM and LLaVA checkpoints, "
                   "through transformers.")
    env_prefix = "IMAGEWIRE_CAPTIONER"
    default_port = 50051

    limits: EngineLimits = field(default_factory=EngineLimits)
