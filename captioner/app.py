"""The captioner as a runtime App: loads the models, owns the engine, registers the servicer."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc.aio
from imagewire.caption.v1 import caption_pb2_grpc

from captioner import tiny
from captioner.backend import BlipBackend
from captioner.engine import CaptionEngine
from captioner.service import SERVICE_NAME, CaptionServicer
from captioner.settings import CaptionerSettings
from imagewire_serving.app import EngineApp
from imagewire_serving.device import default_dtype, resolve_device
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "shapes-blip"


def default_model() -> tuple[str, str]:
    """(model id, source) of the embedded default: the shipped shapes model, else a tiny random BLIP."""
    if (SHIPPED_MODEL / "config.json").is_file():
        return "shapes-blip", str(SHIPPED_MODEL)
    return "tiny-random-blip", str(tiny.ensure_model("tiny"))


class CaptionerApp(EngineApp[CaptionEngine]):
    service_names = (SERVICE_NAME,)
    loading_message = "the caption model is still loading"
    model_libraries = ("transformers",)

    def __init__(self, settings: CaptionerSettings, metrics: Metrics) -> None:
        super().__init__(metrics)
        self.settings = settings

    def register(self, server: grpc.aio.Server) -> None:
        caption_pb2_grpc.add_CaptionServiceServicer_to_server(CaptionServicer(self.engine), server)

    async def load(self) -> None:
        device = resolve_device(self.settings.server.device)
        dtype = default_dtype(device)
        backends = await self.load_backends(
            self.settings.server.models,
            default_model,
            lambda model_id, source: BlipBackend.load(source, device, dtype, model_id=model_id),
        )
        engine = CaptionEngine(backends, self.settings.limits, self.metrics)
        engine.start()
        await engine.warm_up()
        self._engine = engine
