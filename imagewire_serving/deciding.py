"""Loading each model as decided: the dtype, the compiled parts and, for an engine that runs small batches on
their own copy of the weights, that second copy; measured (imagewire_serving.tuning) or taken from the decision
cache. The loading half of :class:`imagewire_serving.app.EngineApp`, whose service hooks it declares.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import torch

from imagewire_serving.compiling import Part, PartClock, compiled_for, first_line
from imagewire_serving.device import DTYPES, Capabilities, DtypeChoice, dtype_name, runs_out_of_dtype
from imagewire_serving.engine import Backend
from imagewire_serving.memory import release, run_bytes
from imagewire_serving.provenance import device_kind, library_versions, model_files
from imagewire_serving.settings import ServiceSettings, compile_cache_dir, looks_like_a_path
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

BackendT = TypeVar("BackendT", bound=Backend)


class DecidedLoading(Generic[BackendT]):
    """Loads models as decided. The App supplies ``load_backend`` and ``probe_shapes`` (and, to keep a second copy
    for small batches, ``split_batches`` and ``weight_bytes``); it sets the attributes below."""

    settings: ServiceSettings
    # The hardware's low-precision arithmetic (None: detected): tests inject it to take every CPU's path.
    capabilities: Capabilities | None
    # The device's free memory in bytes, asked whether a second copy of a model's weights fits: tests inject it.
    free_memory: Callable[[torch.device], int]
    # What each model serves in (dtype, compiled parts, the batch sizes of a second copy) and why: the log and
    # ListModels say it.
    decisions: dict[str, Decision]
    # Per model, the second copy of its weights that runs the small batches, where one was decided and fits.
    small_copies: dict[str, BackendT]
    model_libraries: ClassVar[tuple[str, ...]]

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

    def loading_shapes(self, device: torch.device) -> list[tuple[str, Callable[[BackendT], None]]]:
        """What a start that takes a cached decision runs on ``device`` to compile (or load) its compiled parts
        before SERVING: the probes, unless the App knows cheaper runs that reach every compiled call they make."""
        return self.probe_shapes()

    def split_batches(self) -> tuple[int, int] | None:
        """(the largest batch a second copy of the weights may run, the largest batch the engine forms) for an
        engine that runs small batches on their own copy (:attr:`small_copies`); None: one copy runs everything."""
        return None

    def weight_bytes(self, backend: BackendT) -> int:
        """The bytes of one copy of a model's weights (asked only where :meth:`split_batches` is not None)."""
        raise NotImplementedError


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
            backend = self._load_as(model_id, source, device, decision.dtype, decision.compiled_parts,
                                    small=_in_place(decision))
            _LOGGER.info("%s: %s [decided at an earlier start: %s]", model_id, decision.reason, key)
        else:
            backend, small, decision = self._measure(model_id, source, device, choice, mode)
            cache.save(key, decision)  # as measured: whether the second copy fits is asked at every start
            _LOGGER.info("%s: %s", model_id, decision.reason)
        if decision.second_copy:
            small, decision = self._second_copy(model_id, source, device, backend, small, decision)
        # As loaded (a part that could not compile runs eagerly): what the log and ListModels say.
        every = compiled_for(backend.compile_parts())
        if small is not None and decision.small is not None:
            self.small_copies[model_id] = small
            decision = dataclasses.replace(decision, small=dataclasses.replace(
                decision.small, compiled_parts=compiled_for(small.compile_parts())))
        elif decision.small is not None:
            in_place = compiled_for(backend.compile_parts(), decision.small.largest)
            decision = dataclasses.replace(decision, small=dataclasses.replace(
                decision.small, compiled_parts=in_place) if in_place != every else None)
        self.decisions[model_id] = dataclasses.replace(decision, compiled_parts=every)
        return backend

    def _load_as(self, model_id: str, source: str, device: torch.device, dtype: str, compiled_parts: Sequence[str],
                 probes: int | None = None, small: SmallBatches | None = None) -> BackendT:
        """The model in ``dtype`` with ``compiled_parts`` compiled (and ``small``'s for its batches), by running
        its first ``probes`` loading probes (all: None) now, before SERVING (the kernels come from the compile
        cache)."""
        backend = self._load_one(model_id, source, device, DTYPES[dtype])
        parts = backend.compile_parts()
        wanted = {*compiled_parts, *(small.compiled_parts if small is not None else ())}
        for part in parts:
            if part.name in wanted:
                part.compile(device)
        _use(parts, compiled_parts, small)
        if wanted:
            for _label, run in self.loading_shapes(device)[:probes]:
                run(backend)
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
        second = BatchRange(1, wanted.largest, wanted.dtype, wanted.compiled_parts).label
        reason = (f"{decision.dtype} for every batch, chosen for throughput: a second copy ({second}) does not fit "
                  f"({sizes}); {decision.reason}")
        _LOGGER.warning("%s: %s", model_id, reason)
        return None, dataclasses.replace(decision, small=None, reason=reason)

    def _measure(self, model_id: str, source: str, device: torch.device, choice: DtypeChoice, mode: str
                 ) -> tuple[BackendT, BackendT | None, Decision]:
        """Every dtype candidate loaded, warmed, its heavy parts compiled (--compile on or auto), all measured in
        interleaved rounds (imagewire_serving.tuning), and the decided one kept (with the second copy for small
        batches, where one was decided: whether it fits is asked next)."""
        loaded = self._candidates(model_id, source, device, choice, mode)
        if not choice.timed and not self._worth_compiling(next(iter(loaded.values())).compile_parts(), mode):
            only, backend = next(iter(loaded.items()))  # nothing to compare: the engine's warm-up initialises it
            return backend, None, Decision(only, (), f"{only}: {choice.reason}; no part worth compiling")
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
        _use(parts[decision.dtype], decision.compiled_parts, _in_place(decision))
        small = None
        if decision.small is not None and decision.second_copy:
            _use(parts[decision.small.dtype], decision.small.compiled_parts, None)
            small = loaded[decision.small.dtype]
        chosen = loaded[decision.dtype]
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

    def _candidates(self, model_id: str, source: str, device: torch.device, choice: DtypeChoice, mode: str
                    ) -> dict[str, BackendT]:
        """Each dtype candidate loaded and run once (the first run pays for lazy initialisation), by dtype name; the
        one candidate of an untimed choice with no part worth compiling is only loaded (there is nothing to
        measure). A timed candidate that cannot run an operation in its dtype, or runs out of memory, is skipped
        with a warning; out of memory in every dtype is the start-up error."""
        loaded: dict[str, BackendT] = {}
        failure: BaseException | None = None
        for dtype in choice.candidates:
            try:
                backend = self._load_one(model_id, source, device, dtype)
                if choice.timed or self._worth_compiling(backend.compile_parts(), mode):
                    self._run_probes(backend)
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
        return loaded

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


def _in_place(decision: Decision) -> SmallBatches | None:
    """The decision's small batches where they run on the same copy of the weights (more parts compiled)."""
    return decision.small if decision.small is not None and not decision.second_copy else None


def _use(parts: Sequence[Part], every: Sequence[str], small: SmallBatches | None) -> None:
    """Each part compiled for every batch, for ``small``'s batches only (this copy's small batches), or eager, its
    compiled forms released (a measuring start held the packages of parts it measured and left eager: on the large
    preset gigabytes of weight copies for the server's life)."""
    for part in parts:
        if part.name in every:
            part.use(compiled=True)
        elif small is not None and part.name in small.compiled_parts:
            part.use(compiled=True, up_to=small.largest)
        else:
            part.release()
