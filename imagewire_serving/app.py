"""What both services' Apps share: loading (device -> dtype -> backends -> engine -> start -> warm-up), the
engine once loaded (Unavailable before), and closing.

A service's App (see imagewire_serving.server.App) subclasses :class:`EngineApp` and supplies the hooks: its
embedded default model, how one backend loads, how the engine is built from the loaded backends, and how its
servicer is registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import grpc.aio
import torch

from imagewire_serving import errors
from imagewire_serving.compiling import Part, PartClock, compiled_graphs, configure, first_line
from imagewire_serving.device import (
    DTYPES,
    Capabilities,
    DtypeChoice,
    choose_dtype,
    dtype_name,
    resolve_device,
    runs_out_of_dtype,
)
from imagewire_serving.engine import Backend
from imagewire_serving.logs import quiet_model_loaders
from imagewire_serving.metrics import Metrics
from imagewire_serving.provenance import device_kind, library_versions, model_files
from imagewire_serving.settings import ServiceSettings, compile_cache_dir, looks_like_a_path
from imagewire_serving.threads import apply_threads
from imagewire_serving.tuning import (
    MIN_COMPILED_PART_PARAMETERS,
    Decision,
    DecisionCache,
    Run,
    Variant,
    decide,
    measure_rounds,
)

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


class EngineApp(Generic[SettingsT, EngineT, BackendT]):
    """Base of a service App: owns the settings, the metrics and, once loaded, the engine."""

    # The console-script name, printed in the lines supervisors read ("NAME listening on ...").
    name: ClassVar[str]
    settings_type: ClassVar[type[ServiceSettings]]
    service_names: ClassVar[tuple[str, ...]]
    loading_message: ClassVar[str] = "the model is still loading"
    # The libraries whose loaders print progress bars (transformers, diffusers): silenced before loading.
    model_libraries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: SettingsT, metrics: Metrics, *, capabilities: Capabilities | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        # The hardware's low-precision arithmetic (None: detected): tests inject it to take every CPU's path.
        self.capabilities = capabilities
        self._engine: EngineT | None = None
        # What each model serves in (dtype, compiled parts) and why: the log and ListModels say it.
        self.decisions: dict[str, Decision] = {}

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

    def probes(self, backend: BackendT) -> list[tuple[str, Callable[[], None]]]:
        """The runs that decide the dtype and the compiled parts, as the engine will serve (labelled, smallest
        first; the last is the load the server is sized for): each runs the default request once (blocking)."""
        return [(label, functools.partial(run, backend)) for label, run in self.probe_shapes()]

    def probe_shapes(self) -> list[tuple[str, Callable[[BackendT], None]]]:
        """The probes as (label, run(backend))."""
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

    def _load_decided(self, model_id: str, source: str, device: torch.device, choice: DtypeChoice) -> BackendT:
        """The model in the one dtype allowed, eager; else as a cached decision says, or as measuring decides."""
        mode = self.settings.server.compile
        if not choice.timed and mode == "off":
            only = dtype_name(choice.candidates[0])
            self.decisions[model_id] = Decision(only, (), f"{only}: {choice.reason}; --compile off")
            return self._load_one(model_id, source, device, choice.candidates[0])
        cache = DecisionCache(compile_cache_dir(self.settings.server))
        key = DecisionCache.key(self._decision_facts(source, device, choice))
        decision = cache.load(key)
        if decision is not None:
            backend = self._load_one(model_id, source, device, DTYPES[decision.dtype])
            parts = backend.compile_parts()
            for part in parts:
                if part.name in decision.compiled_parts:
                    part.compile(device)
            if decision.compiled_parts:
                self._run_probes(backend)  # compiles the parts now, before SERVING (kernels from the cache)
            _LOGGER.info("%s: %s [decided at an earlier start: %s]", model_id, decision.reason, key)
        else:
            backend, decision = self._measure(model_id, source, device, choice, mode)
            cache.save(key, decision)
            _LOGGER.info("%s: %s", model_id, decision.reason)
        self.decisions[model_id] = dataclasses.replace(
            decision, compiled_parts=tuple(part.name for part in backend.compile_parts() if part.compiled))
        return backend

    def _measure(self, model_id: str, source: str, device: torch.device, choice: DtypeChoice, mode: str
                 ) -> tuple[BackendT, Decision]:
        """Every dtype candidate loaded, warmed, its heavy parts compiled (--compile on or auto), all measured in
        interleaved rounds (imagewire_serving.tuning), and the decided one kept."""
        loaded: dict[str, BackendT] = {}
        for dtype in choice.candidates:
            backend = self._load_one(model_id, source, device, dtype)
            if not choice.timed and not self._worth_compiling(backend.compile_parts(), mode):
                only = dtype_name(dtype)  # nothing to compare: the engine's warm-up does the lazy initialisation
                return backend, Decision(only, (), f"{only}: {choice.reason}; no part worth compiling")
            try:
                self._run_probes(backend)  # the first run pays for lazy initialisation
            except Exception as error:
                if not (choice.timed and runs_out_of_dtype(error)):
                    raise  # out of memory, or a model that cannot run at all: the start-up error says which
                _LOGGER.warning("%s does not run in %s: %s", model_id, dtype_name(dtype), first_line(error))
                continue
            loaded[dtype_name(dtype)] = backend
        if not loaded:
            raise ValueError(f"--dtype auto: {model_id} ran in none of the dtypes tried")
        parts = {name: backend.compile_parts() for name, backend in loaded.items()}
        variants = [Variant(name, compiled=False) for name in loaded]
        if mode != "off":
            for name, backend in loaded.items():
                heavy = [part for part in parts[name] if self._worth_compiling([part], mode)]
                for part in heavy:
                    part.compile(device)
                if heavy:
                    self._run_probes(backend)  # compiles them (a part that cannot falls back to eager)
                if any(part.compiled for part in parts[name]):
                    variants.append(Variant(name, compiled=True))
        compilable = {name: tuple(part.name for part in parts[name] if part.compiled) for name in loaded}
        if len(variants) == 1:  # nothing to compare: one dtype, no part compiled
            only = variants[0].dtype
            return loaded[only], Decision(only, (), f"{only}: {choice.reason}; no part worth compiling")

        def measure(variant: Variant) -> dict[str, Run]:
            backend = loaded[variant.dtype]
            for part in parts[variant.dtype]:
                part.use(compiled=variant.compiled and part.name in compilable[variant.dtype])
            return self._time_probes(backend, parts[variant.dtype], device)

        decision = decide(measure_rounds(variants, measure), compilable, mode)
        chosen = loaded[decision.dtype]
        for part in parts[decision.dtype]:
            part.use(compiled=part.name in decision.compiled_parts)
        loaded.clear()  # the candidates that lost are released
        if sum(bool(names) for names in compilable.values()) > 1:
            # Their compiled graphs (with frozen copies of their weights) too; the kept ones compile again, from
            # inductor's cache.
            torch._dynamo.reset()
            self._run_probes(chosen)
        return chosen, decision

    @staticmethod
    def _worth_compiling(parts: Sequence[Part], mode: str) -> bool:
        """Whether --compile tries any of ``parts``: every one with on; with auto, those of
        MIN_COMPILED_PART_PARAMETERS weights or more (a count, not a timing: the machine's load never decides)."""
        return mode == "on" or (mode == "auto" and any(p.parameters() >= MIN_COMPILED_PART_PARAMETERS for p in parts))

    def _run_probes(self, backend: BackendT) -> None:
        for _label, probe in self.probes(backend):
            probe()

    def _time_probes(self, backend: BackendT, parts: Sequence[Part], device: torch.device) -> dict[str, Run]:
        runs: dict[str, Run] = {}
        for label, probe in self.probes(backend):
            clock = PartClock(parts, device)
            with clock.attached():
                started = time.perf_counter()
                probe()
                seconds = time.perf_counter() - started
            runs[label] = Run(seconds, dict(clock.seconds))
        return runs

    def _decision_facts(self, source: str, device: torch.device, choice: DtypeChoice) -> dict[str, object]:
        """What a decision depends on: the model's files, the hardware, the libraries, the settings."""
        server = self.settings.server
        return {"model": model_files(source).digest or source, "hardware": device_kind(device),
                "capabilities": self.capabilities, "versions": library_versions(("torch", *self.model_libraries)),
                "candidates": [dtype_name(dtype) for dtype in choice.candidates], "compile": server.compile,
                "threads": torch.get_num_threads(), "probes": [label for label, _ in self.probe_shapes()]}

    def _load_one(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> BackendT:
        """One backend, or a ValueError naming the --model that failed and why, in one line."""
        if looks_like_a_path(source) and not Path(source).expanduser().is_dir():
            raise ValueError(f"--model {source}: no such directory")
        try:
            return self.load_backend(model_id, source, device, dtype)
        except (ValueError, OSError, RuntimeError, KeyError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"--model {source}: cannot load it: {reason}") from error

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
