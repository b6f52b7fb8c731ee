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
from imagewire_serving.memory import free_bytes, release, run_bytes
from imagewire_serving.metrics import Metrics
from imagewire_serving.provenance import device_kind, library_versions, model_files
from imagewire_serving.settings import ServiceSettings, compile_cache_dir, looks_like_a_path
from imagewire_serving.threads import apply_threads
from imagewire_serving.tuning import (
    MIN_COMPILED_PART_PARAMETERS,
    BatchRange,
    Decision,
    DecisionCache,
    Run,
    SmallBatches,
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

    def __init__(self, settings: SettingsT, metrics: Metrics, *, capabilities: Capabilities | None = None,
                 free_memory: Callable[[torch.device], int] = free_bytes) -> None:
        self.settings = settings
        self.metrics = metrics
        # The hardware's low-precision arithmetic (None: detected): tests inject it to take every CPU's path.
        self.capabilities = capabilities
        # The device's free memory in bytes, asked whether a second copy of a model's weights fits: tests inject it.
        self.free_memory = free_memory
        self._engine: EngineT | None = None
        # What each model serves in (dtype, compiled parts, the batch sizes of a second copy) and why: the log and
        # ListModels say it.
        self.decisions: dict[str, Decision] = {}
        # Per model, the second copy of its weights that runs the small batches, where one was decided and fits.
        self.small_copies: dict[str, BackendT] = {}

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

    def split_batches(self) -> tuple[int, int] | None:
        """(the largest batch a second copy of the weights may run, the largest batch the engine forms) for an
        engine that runs small batches on their own copy (:attr:`small_copies`); None: one copy runs everything."""
        return None

    def weight_bytes(self, backend: BackendT) -> int:
        """The bytes of one copy of a model's weights (asked only where :meth:`split_batches` is not None)."""
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
        small: BackendT | None = None
        if decision is not None:
            backend = self._load_as(model_id, source, device, decision.dtype, decision.compiled_parts)
            _LOGGER.info("%s: %s [decided at an earlier start: %s]", model_id, decision.reason, key)
        else:
            backend, small, decision = self._measure(model_id, source, device, choice, mode)
            cache.save(key, decision)  # as measured: whether the second copy fits is asked at every start
            _LOGGER.info("%s: %s", model_id, decision.reason)
        if decision.small is not None:
            small, decision = self._second_copy(model_id, source, device, backend, small, decision)
        if small is not None and decision.small is not None:
            self.small_copies[model_id] = small
            decision = dataclasses.replace(decision, small=dataclasses.replace(
                decision.small, compiled_parts=_compiled(small)))
        self.decisions[model_id] = dataclasses.replace(decision, compiled_parts=_compiled(backend))
        return backend

    def _load_as(self, model_id: str, source: str, device: torch.device, dtype: str, compiled_parts: Sequence[str],
                 probes: int | None = None) -> BackendT:
        """The model in ``dtype`` with ``compiled_parts`` compiled, by running its first ``probes`` probes (all:
        None) now, before SERVING (the kernels come from the compile cache)."""
        backend = self._load_one(model_id, source, device, DTYPES[dtype])
        for part in backend.compile_parts():
            if part.name in compiled_parts:
                part.compile(device)
        if compiled_parts:
            self._run_probes(backend, probes)
        return backend

    def _second_copy(self, model_id: str, source: str, device: torch.device, backend: BackendT,
                     small: BackendT | None, decision: Decision) -> tuple[BackendT | None, Decision]:
        """The second copy for small batches (loaded now if ``small`` is None) when it fits beside ``backend``: its
        weights and the activations of the largest batch (one batch runs at a time, on either copy) within the
        memory free with one copy loaded. Otherwise none, and the decision says why: one dtype serves every batch,
        the one chosen for throughput."""
        assert decision.small is not None
        split = self.split_batches()
        assert split is not None
        wanted: SmallBatches = decision.small
        one_copy = self.weight_bytes(backend)
        weights = one_copy * DTYPES[wanted.dtype].itemsize // backend.dtype.itemsize
        # Measured on CUDA; on the CPU, which counts nothing, the larger copy's weights again: a batch's
        # activations are a fraction of a captioner's weights.
        activations = run_bytes(device, functools.partial(self._run_probes, backend), max(weights, one_copy))
        need = weights + activations
        free = self.free_memory(device) + (self.weight_bytes(small) if small is not None else 0)
        sizes = f"{need / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free"
        fits = need <= free
        if fits and small is None:
            try:
                small = self._load_as(model_id, source, device, wanted.dtype, wanted.compiled_parts, probes=1)
            except torch.OutOfMemoryError as error:
                fits, sizes = False, f"{sizes}; loading it ran out of memory: {first_line(error)}"
        ranges = ", ".join(batches.label for batches in decision.ranges(split[1]))
        if fits:
            reason = f"{ranges} (both copies fit: {sizes}); {decision.reason}"
            _LOGGER.info("%s: %s", model_id, reason)
            return small, dataclasses.replace(decision, reason=reason)
        small = None
        release(device)
        second = BatchRange(1, wanted.largest, wanted.dtype).label
        reason = (f"{decision.dtype} for every batch, chosen for throughput: a second copy ({second}) does not fit "
                  f"({sizes}); {decision.reason}")
        _LOGGER.warning("%s: %s", model_id, reason)
        return None, dataclasses.replace(decision, small=None, reason=reason)

    def _measure(self, model_id: str, source: str, device: torch.device, choice: DtypeChoice, mode: str
                 ) -> tuple[BackendT, BackendT | None, Decision]:
        """Every dtype candidate loaded, warmed, its heavy parts compiled (--compile on or auto), all measured in
        interleaved rounds (imagewire_serving.tuning), and the decided one kept (with the second copy for small
        batches, where one was decided: whether it fits is asked next)."""
        loaded: dict[str, BackendT] = {}
        failure: BaseException | None = None
        for dtype in choice.candidates:
            try:
                backend = self._load_one(model_id, source, device, dtype)
                if not choice.timed and not self._worth_compiling(backend.compile_parts(), mode):
                    only = dtype_name(dtype)  # nothing to compare: the engine's warm-up does the lazy initialisation
                    return backend, None, Decision(only, (), f"{only}: {choice.reason}; no part worth compiling")
                self._run_probes(backend)  # the first run pays for lazy initialisation
            except Exception as error:
                out_of_memory = isinstance(error, torch.OutOfMemoryError)
                if not (choice.timed and (out_of_memory or runs_out_of_dtype(error))):
                    raise  # a model that cannot run at all (or in the one dtype allowed): the start-up error
                _LOGGER.warning("%s %s in %s: %s", model_id, "does not fit in memory" if out_of_memory else
                                "does not run", dtype_name(dtype), first_line(error))
                failure = error
                continue
            loaded[dtype_name(dtype)] = backend
        if failure is not None:
            release(device)
        if not loaded:
            if isinstance(failure, torch.OutOfMemoryError):
                raise failure  # in every dtype: the start-up error says the default request does not fit
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
            return loaded[only], None, Decision(only, (), f"{only}: {choice.reason}; no part worth compiling")

        def measure(variant: Variant) -> dict[str, Run]:
            backend = loaded[variant.dtype]
            for part in parts[variant.dtype]:
                part.use(compiled=variant.compiled and part.name in compilable[variant.dtype])
            return self._time_probes(backend, parts[variant.dtype], device)

        split = self.split_batches()
        decision = decide(measure_rounds(variants, measure), compilable, mode, split_at=split[0] if split else None)
        kept = {decision.dtype: decision.compiled_parts}
        if decision.small is not None:
            kept[decision.small.dtype] = decision.small.compiled_parts
        for name, compiled in kept.items():
            for part in parts[name]:
                part.use(compiled=part.name in compiled)
        chosen = loaded[decision.dtype]
        small = loaded[decision.small.dtype] if decision.small is not None else None
        loaded.clear()  # the candidates that lost are released
        release(device)
        if sum(bool(names) for names in compilable.values()) > 1:
            # Their compiled graphs (with frozen copies of their weights) too; the kept ones compile again, from
            # inductor's cache (the small batches' copy for its own batch sizes only).
            torch._dynamo.reset()
            self._run_probes(chosen)
            if small is not None:
                self._run_probes(small, 1)
        return chosen, small, decision

    @staticmethod
    def _worth_compiling(parts: Sequence[Part], mode: str) -> bool:
        """Whether --compile tries any of ``parts``: every one with on; with auto, those of
        MIN_COMPILED_PART_PARAMETERS weights or more (a count, not a timing: the machine's load never decides)."""
        return mode == "on" or (mode == "auto" and any(p.parameters() >= MIN_COMPILED_PART_PARAMETERS for p in parts))

    def _run_probes(self, backend: BackendT, count: int | None = None) -> None:
        """Run the first ``count`` probes (None: all)."""
        for _label, probe in self.probes(backend)[:count]:
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
        except torch.OutOfMemoryError:
            raise  # the device's memory, not the model: the caller says what to change
        except (ValueError, OSError, RuntimeError, KeyError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"--model {source}: cannot load it: {reason}") from error

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()


def _compiled(backend: Backend) -> tuple[str, ...]:
    return tuple(part.name for part in backend.compile_parts() if part.compiled)


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
