"""The animator as a runtime App: loads the models, owns the engine, registers the servicer."""

from __future__ import annotations

import asyncio
import logging

import grpc.aio
from imagewire.animate.v1 import animate_pb2_grpc

from animator import tiny
from animator.backend import SvdBackend
from animator.engine import AnimateEngine
from animator.safety import SafetyChecker
from animator.service import SERVICE_NAME, AnimateServicer
from animator.settings import AnimatorSettings
from imagewire_serving.app import EngineApp
from imagewire_serving.device import default_dtype, resolve_device
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "tiny-random-svd"


def default_model() -> tuple[str, str]:
    """(model id, source) of the embedded default: a tiny random SVD built locally on first use."""
    return EMBEDDED_MODEL_ID, str(tiny.ensure_model("tiny"))


class AnimatorApp(EngineApp[AnimateEngine]):
    service_names = (SERVICE_NAME,)
    loading_message = "the video model is still loading"
    model_libraries = ("transformers", "diffusers")

    def __init__(self, settings: AnimatorSettings, metrics: Metrics) -> None:
        super().__init__(metrics)
        self.settings = settings

    def register(self, server: grpc.aio.Server) -> None:
        animate_pb2_grpc.add_AnimateServiceServicer_to_server(AnimateServicer(self.engine), server)

    async def load(self) -> None:
        device = resolve_device(self.settings.server.device)
        dtype = default_dtype(device)
        backends = await self.load_backends(
            self.settings.server.models,
            default_model,
            lambda model_id, source: SvdBackend.load(
                source, device, dtype, model_id=model_id, cpu_offload=self.settings.cpu_offload),
        )
        checker = None
        if self.settings.safety_checker is not None:
            checker = await asyncio.to_thread(SafetyChecker.load, self.settings.safety_checker, device, dtype)
        engine = AnimateEngine(backends, self.settings.limits, self.metrics, safety_checker=checker)
        engine.start()
        await engine.warm_up()
        self._engine = engine
