"""The animator's settings: the shared server settings, the engine limits and the animator's own options, from
flags and IMAGEWIRE_ANIMATOR_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from animator.limits import EngineLimits
from imagewire_serving.config import option
from imagewire_serving.settings import ServiceSettings


@dataclass(frozen=True)
class AnimatorSettings(ServiceSettings):
    """Everything the animator process is configured with, checked when built."""

    prog = "imagewire-animator"
    description = ("Serve image-to-video (Stable Video Diffusion, LTX-Video or Wan via diffusers) over gRPC, "
                   "streaming the video.")
    env_prefix = "IMAGEWIRE_ANIMATOR"
    default_port = 50052

    limits: EngineLimits = field(default_factory=EngineLimits)
    # Keep model components on the CPU until they run (CUDA only): SVD-XT then fits a 24 GB card.
    cpu_offload: bool = option(False, "keep model components on the CPU until they run (CUDA; for 24 GB cards)",
                               boolean=True)
    # A StableDiffusionSafetyChecker directory or hub id; None = no checker (results say no check ran).
    safety_checker: str | None = option(
        None, "StableDiffusionSafetyChecker directory or hub id, run on input images on request")

    def check(self) -> None:
        if self.safety_checker is not None and not self.safety_checker.strip():
            raise ValueError("--safety-checker must name a directory or hub id")
