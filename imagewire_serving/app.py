"""What both services' Apps share: the engine once loaded (Unavailable before), timed model loading, closing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from imagewire_serving import errors
from imagewire_serving.logs import quiet_model_loaders
from imagewire_serving.metrics import Metrics


class _Engine(Protocol):
    async def close(self) -> None: ...


EngineT = TypeVar("EngineT", bound=_Engine)
BackendT = TypeVar("BackendT")


class EngineApp(Generic[EngineT]):
    """Base of a service App (see imagewire_serving.server.App): subclasses build the engine in ``load``."""

    loading_message = "the model is still loading"
    # The libraries whose loaders print progress bars (transformers, diffusers): silenced before loading.
    model_libraries: tuple[str, ...] = ()

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._engine: EngineT | None = None

    def engine(self) -> EngineT:
        """The loaded engine; servicers call this per request, so calls before loading get UNAVAILABLE."""
        if self._engine is None:
            raise errors.Unavailable(self.loading_message)
        return self._engine

    async def load_backends(
        self,
        models: Sequence[str],
        default: Callable[[], tuple[str, str]],
        load: Callable[[str, str], BackendT],
    ) -> list[BackendT]:
        """Load each ``--model`` (or the embedded default's (id, source)) off the event loop, timing each."""
        quiet_model_loaders(self.model_libraries)
        sources = [(model, model) for model in models] or [await asyncio.to_thread(default)]
        backends = []
        for model_id, source in sources:
            started = time.perf_counter()
            backends.append(await asyncio.to_thread(load, model_id, source))
            self.metrics.set_model_load(model_id, time.perf_counter() - started)
        return backends

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()
