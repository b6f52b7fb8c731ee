"""What both services' Apps share: loading (device -> dtype -> backends -> engine -> start -> warm-up), the
engine once loaded (Unavailable before), and closing.

A service's App (see imagewire_serving.server.App) subclasses :class:`EngineApp` and supplies the hooks: its
embedded default model, how one backend loads, how the engine is built from the loaded backends, and how its
servicer is registered. How each model is loaded as decided (dtype, compiled parts, a second copy for small
batches) is :mod:`imagewire_serving.deciding`, the half of the App it inherits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import grpc.aio
import torch

from imagewire_serving import errors, packages
from imagewire_serving.compiling import compiled_graphs, configure
from imagewire_serving.deciding import DecidedLoading
from imagewire_serving.device import (
    Capabilities,
    DtypeChoice,
    choose_dtype,
    dtype_name,
    resolve_device,
    runs_out_of_dtype,
)
from imagewire_serving.engine import Backend
from imagewire_serving.logs import quiet_model_loaders
from imagewire_serving.memory import free_bytes
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServiceSettings, compile_cache_dir
from imagewire_serving.threads import apply_threads

_LOGGER = logging.getLogger(__name__)

# A test hook: while the file this variable names does not exist, loading waits (the server listens and reports
# NOT_SERVING), so a test can hold a replica in its loading state for exactly as long as it needs.
LOAD_GATE_ENV = "IMAGEWIRE_TEST_LOAD_GATE"
_GATE_POLL_S = 0.05


class _Engine(Protocol):
    choices: dict[str, str]

    def start(self) -> None: ...

    async def warm_up(self) -> None: ...

    async def close(self) -> None: ...


EngineT = TypeVar("EngineT", bound=_Engine)
BackendT = TypeVar("BackendT", bound=Backend)
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
T = TypeVar("T")


class EngineApp(DecidedLoading[BackendT], Generic[SettingsT, EngineT, BackendT]):
    """Base of a service App: owns the settings, the metrics and, once loaded, the engine."""

    # The console-script name, printed in the lines supervisors read ("NAME listening on ...").
    name: ClassVar[str]
    settings_type: ClassVar[type[ServiceSettings]]
    service_names: ClassVar[tuple[str, ...]]
    loading_message: ClassVar[str] = "the model is still loading"
    # The libraries whose loaders print progress bars (transformers, diffusers): silenced before loading.
    model_libraries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: SettingsT, metrics: Metrics, *, capabilities: Capabilities | None = None,
                 free_memory: Callable[[torch.device], int] = free_bytes) -> None:
        self.settings: SettingsT = settings
        self.metrics = metrics
        self.capabilities = capabilities
        self.free_memory = free_memory
        self._engine: EngineT | None = None
        self.decisions = {}
        self.small_copies = {}

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

    async def build_engine(self, backends: Sequence[BackendT], device: torch.device) -> EngineT:
        """The engine over the loaded backends (not yet started)."""
        raise NotImplementedError

    async def load(self) -> None:
        """Load every model, build, start and warm up the engine; the server reports SERVING after this."""
        await _load_gate()
        server = self.settings.server
        device = resolve_device(server.device)
        threads = apply_threads(server.threads)
        choice = choose_dtype(server.dtype, device, self.capabilities)
        if server.compile != "off":
            configure(compile_cache_dir(server), device)
        try:
            backends = await self._load_backends(device, choice)
        except torch.OutOfMemoryError as error:  # measuring runs the default request too
            raise _startup_error(error, server.dtype, device, []) from error
        engine = await self.build_engine(backends, device)
        engine.choices = {model_id: decision.reason for model_id, decision in self.decisions.items()}
        engine.start()
        try:
            await engine.warm_up()
        except BaseException as error:
            await engine.close()
            explained = _startup_error(error, server.dtype, device, backends)
            if explained is error:
                raise
            raise explained from error
        self._engine = engine
        if server.compile != "off" and server.compile_cache_max_gb:
            packages.trim(int(server.compile_cache_max_gb * 1e9))
        # Graphs compiled from here on are shapes the warm-up did not cover: counted, as recompilations.
        warmed = compiled_graphs()
        self.metrics.recompiles.set_function(lambda: compiled_graphs() - warmed)
        # Said once the models serve, so that a failed start stays the one line naming its cause.
        _LOGGER.info("%s; --dtype %s on %s: %s", threads, server.dtype, device, choice.reason)

    async def _load_backends(self, device: torch.device, choice: DtypeChoice) -> list[BackendT]:
        """Each --model (or the embedded default) loaded off the event loop, in the dtype and with the compiled
        parts decided for it."""
        quiet_model_loaders(self.model_libraries)
        models = self.settings.server.models
        sources = [(model, model) for model in models] or [await in_daemon_thread(self.default_model)]
        backends: list[BackendT] = []
        for model_id, source in sources:
            started = time.perf_counter()
            backends.append(await in_daemon_thread(self._load_decided, model_id, source, device, choice))
            self.metrics.model_load.labels(model_id).set(time.perf_counter() - started)
        return backends

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()


def _startup_error(error: BaseException, dtype: str, device: torch.device, backends: Sequence[Backend]
                   ) -> BaseException:
    """A warm-up failure as the start-up error an operator can act on: the flag or the memory to change."""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, torch.OutOfMemoryError):
        # The warm-up runs the default request (on a GPU): a card too small for it fails here, not on a caller.
        return errors.OutOfMemory(f"the models' default request does not fit in the memory of {device}: {detail}; "
                                  "use a larger device or lower the defaults (the animator: --cpu-offload)")
    if runs_out_of_dtype(error) and dtype != "float32":
        dtypes = ", ".join(sorted({dtype_name(backend.dtype) for backend in backends}))
        return ValueError(f"--dtype {dtype}: the model cannot run in {dtypes} on {device}: {detail}")
    return error


async def _load_gate() -> None:
    gate = os.environ.get(LOAD_GATE_ENV)
    while gate and not os.path.exists(gate):
        await asyncio.sleep(_GATE_POLL_S)


async def in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (a model load, which may take minutes or hang on a network) off the event loop in a
    daemon thread: unlike the default executor's threads, it does not hold the process open after a SIGTERM."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = function(*args)
        except BaseException as error:  # handed to the awaiting coroutine
            report: Callable[[], None] = functools.partial(future.set_exception, error)
        else:
            report = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop closed while we worked: nobody is waiting
            loop.call_soon_threadsafe(settle, report)

    threading.Thread(target=target, name=f"load:{getattr(function, '__name__', 'call')}", daemon=True).start()
    return await future
