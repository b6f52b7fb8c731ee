"""The captioner as a runtime App: loads the models, owns the engine, registers the servicer."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc.aio
from imagewire.caption.v1 import caption_pb2_grpc

from captioner import tiny
from captioner.backend import BlipBackend
from captioner.engine import CaptionEngine
from captioner.service import SERVICE_NAME, CaptionServicer
from captioner.settings import CaptionerSettings
from imagewire_serving import errors
from imagewire_serving.device import default_dtype, resolve_device
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "shapes-blip"


def default_model() -> tuple[str, str]:
    """(model id, source) of the embedded default: the shipped shapes model, else a tiny random BLIP."""
    if (SHIPPED_MODEL / "config.json").is_file():
        return "shapes-blip", str(SHIPPED_MODEL)
    return "tiny-random-blip", str(tiny.ensure_model("tiny"))


class CaptionerApp:
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: CaptionerSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._engine: CaptionEngine | None = None

    def engine(self) -> CaptionEngine:
        if self._engine is None:
            raise errors.Unavailable("the caption model is still loading")
        return self._engine

    def register(self, server: grpc.aio.Server) -> None:
        caption_pb2_grpc.add_CaptionServiceServicer_to_server(CaptionServicer(self.engine), server)

    async def load(self) -> None:
        device = resolve_device(self.settings.server.device)
        dtype = default_dtype(device)
        sources = [(m, m) for m in self.settings.server.models] or [default_model()]
        backends = []
        for model_id, source in sources:
            started = time.perf_counter()
            backends.append(await asyncio.to_thread(BlipBackend.load, source, device, dtype, model_id=model_id))
            self.metrics.set_model_load(model_id, time.perf_counter() - started)
        engine = CaptionEngine(backends, self.settings.limits, self.metrics)
        engine.start()
        await engine.warm_up()
        self._engine = engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()
