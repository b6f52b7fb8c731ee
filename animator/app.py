"""The animator as a runtime App: its embedded model, how its models load, its engine and servicer."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc.aio
import torch
from imagewire.animate.v1 import animate_pb2_grpc

from animator import families, generation, tiny
from animator.backend import VideoBackend
from animator.engine import AnimateEngine, warm_up_image, warm_up_request
from animator.params import warm_up_params
from animator.safety import SafetyChecker
from animator.service import SERVICE_NAME, AnimateServicer
from animator.settings import AnimatorSettings
from imagewire_serving.app import EngineApp

# The trained embedded model (animator.training), shipped in the package; the tiny random SVD stands in for it in
# a checkout without it.
SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "shapes-svd"
SHIPPED_MODEL_ID = "shapes-svd"
EMBEDDED_MODEL_ID = "tiny-random-svd"


class AnimatorApp(EngineApp[AnimatorSettings, AnimateEngine, VideoBackend]):
    name = "imagewire-animator"
    settings_type = AnimatorSettings
    service_names = (SERVICE_NAME,)
    loading_message = "the video model is still loading"
    model_libraries = ("transformers", "diffusers")

    def register(self, server: grpc.aio.Server) -> None:
        animate_pb2_grpc.add_AnimateServiceServicer_to_server(AnimateServicer(self.engine), server)

    def default_model(self) -> tuple[str, str]:
        """The shipped shapes model, else (in a checkout without it) a tiny random SVD built locally on first use
        (its videos are noise; it runs the real pipeline)."""
        if (SHIPPED_MODEL / "model_index.json").is_file():
            return SHIPPED_MODEL_ID, str(SHIPPED_MODEL)
        return EMBEDDED_MODEL_ID, str(tiny.ensure_model("tiny"))

    def load_backend(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> VideoBackend:
        """The checkpoint's family (from its model_index.json) loads it."""
        return families.load(model_id, source, device, dtype, cpu_offload=self.settings.cpu_offload,
                             dtype_chosen=self.settings.server.dtype != "auto")

    def probe_shapes(self) -> list[tuple[str, Callable[[VideoBackend], None]]]:
        """The warm-up's generation (the fewest steps; on the CPU the smallest video), and with compiling on or
        auto the model's default size, frame count and decode chunk too, so callers' shapes are compiled."""
        shapes: list[tuple[str, Callable[[VideoBackend], None]]] = [("warm-up video", self._warm_up)]
        if self.settings.server.compile != "off":
            shapes.append(("default video", functools.partial(self._warm_up, default_shape=True)))
        return shapes

    def _warm_up(self, backend: VideoBackend, default_shape: bool = False) -> None:
        params = (warm_up_params(backend.accepts, self.settings.limits, default_shape=True) if default_shape
                  else warm_up_request(backend, self.settings.limits))
        generation.warm_up(backend, warm_up_image(), params)

    async def build_engine(self, backends: Sequence[VideoBackend], device: torch.device) -> AnimateEngine:
        checker = None
        if self.settings.safety_checker is not None:
            checker = await asyncio.to_thread(SafetyChecker.load, self.settings.safety_checker, device,
                                              backends[0].dtype)
        return AnimateEngine(backends, self.settings.limits, self.metrics, safety_checker=checker)
