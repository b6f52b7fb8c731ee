"""The captioner as a runtime App: its embedded model, how its models load, its engine and servicer."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc.aio
import torch
from imagewire.caption.v1 import caption_pb2_grpc

from captioner import tiny
from captioner.backend import CaptionBackend
from captioner.batcher import SmallCopy
from captioner.engine import CaptionEngine, default_options, default_request, request_fields
from captioner.families import load_captioner
from captioner.service import SERVICE_NAME, CaptionServicer
from captioner.settings import CaptionerSettings
from imagewire_serving import packages
from imagewire_serving.app import EngineApp

SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "shapes-blip"


class CaptionerApp(EngineApp[CaptionerSettings, CaptionEngine, CaptionBackend]):
    name = "imagewire-captioner"
    settings_type = CaptionerSettings
    service_names = (SERVICE_NAME,)
    loading_message = "the caption model is still loading"
    model_libraries = ("transformers",)

    def register(self, server: grpc.aio.Server) -> None:
        caption_pb2_grpc.add_CaptionServiceServicer_to_server(CaptionServicer(self.engine), server)

    def default_model(self) -> tuple[str, str]:
        """The shipped shapes model, else (in a checkout without it) a tiny random BLIP built locally."""
        if (SHIPPED_MODEL / "config.json").is_file():
            return "shapes-blip", str(SHIPPED_MODEL)
        return "tiny-random-blip", str(tiny.ensure_model("tiny"))

    def load_backend(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> CaptionBackend:
        return load_captioner(source, device, dtype, model_id=model_id)

    def probe_shapes(self) -> list[tuple[str, Callable[[CaptionBackend], None]]]:
        """The default request alone and in the largest batch the batcher forms (what a loaded server runs)."""
        return self._batches(sorted({1, self.settings.limits.max_batch_size}))

    def loading_shapes(self, device: torch.device) -> list[tuple[str, Callable[[CaptionBackend], None]]]:
        """On the CPU a compiled part runs every batch of two rows or more through one package per call shape, its
        batch dynamic (imagewire_serving.packages): a batch of two loads all that the largest batch runs, so a
        restart does not caption a whole largest batch (on the large preset a minute on the CPU) to be ready."""
        if device.type != "cpu" or packages.directory() is None:
            return self.probe_shapes()
        return self._batches(sorted({1, min(2, self.settings.limits.max_batch_size)}))

    def _batches(self, sizes: list[int]) -> list[tuple[str, Callable[[CaptionBackend], None]]]:
        return [(f"batch {size}", functools.partial(self._default_batch, size=size)) for size in sizes]

    def _default_batch(self, backend: CaptionBackend, size: int) -> None:
        default_request(backend, default_options(request_fields(self.settings.limits, backend)), size)

    def split_batches(self) -> tuple[int, int] | None:
        """A lone request (a batch of one, the smallest probe) may run on its own copy of the weights, in the dtype
        measured fastest for it; every batch of two or more (concurrent callers: throughput) on the other."""
        largest = self.settings.limits.max_batch_size
        return (1, largest) if largest > 1 else None

    def weight_bytes(self, backend: CaptionBackend) -> int:
        return backend.weight_bytes()

    async def build_engine(self, backends: Sequence[CaptionBackend], device: torch.device) -> CaptionEngine:
        small = {model_id: SmallCopy(copy, decision.small.largest) for model_id, copy in self.small_copies.items()
                 if (decision := self.decisions[model_id]).small is not None}
        return CaptionEngine(backends, self.settings.limits, self.metrics, small)
