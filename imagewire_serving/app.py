"""What both services' Apps share: loading (device -> dtype -> backends -> engine -> start -> warm-up), the
engine once loaded (Unavailable before), and closing.

A service's App (see imagewire_serving.server.App) subclasses :class:`EngineApp` and supplies the hooks: its
embedded default model, how one backend loads, how the engine is built from the loaded backends, and how its
servicer is registered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

import grpc.aio
import torch

from imagewire_serving import errors
from imagewire_serving.device import default_dtype, resolve_device
from imagewire_serving.logs import quiet_model_loaders
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServiceSettings


class _Engine(Protocol):
    def start(self) -> None: ...

    async def warm_up(self) -> None: ...

    async def close(self) -> None: ...


EngineT = TypeVar("EngineT", bound=_Engine)
BackendT = TypeVar("BackendT")
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


class EngineApp(Generic[SettingsT, EngineT, BackendT]):
    """Base of a service App: owns the settings, the metrics and, once loaded, the engine."""

    # The console-script name, printed in the lines supervisors read ("NAME listening on ...").
    name: ClassVar[str]
    settings_type: ClassVar[type[ServiceSettings]]
    service_names: ClassVar[tuple[str, ...]]
    loading_message: ClassVar[str] = "the model is still loading"
    # The libraries whose loaders print progress bars (transformers, diffusers): silenced before loading.
    model_libraries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: SettingsT, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._engine: EngineT | None = None

    def engine(self) -> EngineT:
        """The loaded engine; servicers call this per request, so calls before loading get UNAVAILABLE."""
        if self._engine is None:
            raise errors.Unavailable(self.loading_message)
        return self._engine

    def register(self, server: grpc.aio.Server) -> None:
        """Add the service's servicer (built over :meth:`engine`) to the server."""
        raise NotImplementedError

    def default_model(self) -> tuple[str, str]:
        """(model id, source) of the embedded model served when no --model is given; may build it (blocking)."""
        raise NotImplementedError

    def load_backend(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> BackendT:
        """Load one model through from_pretrained (blocking; runs off the event loop)."""
        raise NotImplementedError

    async def build_engine(self, backends: Sequence[BackendT], device: torch.device, dtype: torch.dtype) -> EngineT:
        """The engine over the loaded backends (not yet started)."""
        raise NotImplementedError

    async def load(self) -> None:
        """Load every model, build, start and warm up the engine; the server reports SERVING after this."""
        device = resolve_device(self.settings.server.device)
        dtype = default_dtype(device)
        backends = await self._load_backends(device, dtype)
        engine = await self.build_engine(backends, device, dtype)
        engine.start()
        try:
            await engine.warm_up()
        except BaseException:
            await engine.close()
            raise
        self._engine = engine

    async def _load_backends(self, device: torch.device, dtype: torch.dtype) -> list[BackendT]:
        """Each --model (or the embedded default) loaded off the event loop and timed."""
        quiet_model_loaders(self.model_libraries)
        models = self.settings.server.models
        sources = [(model, model) for model in models] or [await asyncio.to_thread(self.default_model)]
        backends: list[BackendT] = []
        for model_id, source in sources:
            started = time.perf_counter()
            backends.append(await asyncio.to_thread(self.load_backend, model_id, source, device, dtype))
            self.metrics.model_load.labels(model_id).set(time.perf_counter() - started)
        return backends

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()

