"""How ``--dtype auto`` and ``--compile auto`` decide, so that every start on the same hardware decides alike.

A model is run as it will serve (its probes: a batch of one and the largest batch the engine forms) in every
variant, one dtype candidate eager or with its parts compiled, in interleaved rounds (each round runs every variant
once, in a rotated order, so a change in the machine's other load hits them all alike). Medians decide, with a
stated margin: a lower precision, or a compiled part, is chosen only when it is at least :data:`MARGIN` times as
fast as float32, or as the part run eagerly; within the margin the simpler choice stays. The decision is then
cached (:class:`DecisionCache`), keyed by the model's files, the hardware, the library versions and the settings
that change it, so the next start on this kind of host (a restart, another replica sharing the cache directory)
takes it as it is instead of measuring again.

Pure Python over injected measurements: the timed path is tested on every CPU with timings a test supplies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

# A lower precision or a compiled part must be at least this much faster to be chosen: a real gain is larger (2-3x
# for bfloat16 batches and compiled bfloat16 encoders on CPUs with AMX or AVX512-BF16), the noise of a busy host
# smaller, so that no start on the same hardware decides otherwise.
MARGIN = 1.25
# Interleaved rounds: at least this many, more (up to the maximum) while the measuring budget lasts.
MIN_ROUNDS = 3
MAX_ROUNDS = 7
ROUNDS_BUDGET_S = 30.0
# --compile auto leaves eager a part with fewer weights than this: compiling it costs seconds to minutes at start-up,
# which the test-sized models (the shapes and tiny models' parts: 0.03-1.3 million) are spared. A count, not a
# timing, so that whether a part is even tried does not depend on the machine's load. Real parts are above it (a
# ViT-S encoder has 22 million; the bench's small decoder, 9.7 million, takes three quarters of a lone caption's
# time eagerly and gains 1.7x compiled in bfloat16 on an AVX512-BF16 EPYC).
MIN_COMPILED_PART_PARAMETERS = 5_000_000
# Bumped when the rules above change, so that cached decisions are made again (2: small batches may have their own
# copy of the weights; 3: the captioner's text decoder is a part that may be compiled; 4: a part may be compiled
# for small batches only, and parts of 5 million weights are tried; 5: on the CPU compiled parts are AOTInductor
# packages, whose speed differs from torch.compile's: a decision measured with the one must not choose for the other).
RULES_VERSION = 5


@dataclass(frozen=True)
class Variant:
    """One way to serve a model: its dtype, with its compiled parts or eager."""

    dtype: str
    compiled: bool

    @property
    def label(self) -> str:
        return f"{self.dtype} {'compiled' if self.compiled else 'eager'}"


@dataclass(frozen=True)
class Run:
    """One probe run of a variant: its whole time and the time of each part in it."""

    seconds: float
    parts: Mapping[str, float] = field(default_factory=dict)


# One round's measurement of a variant: each probe (by label) run once.
Measure = Callable[[Variant], Mapping[str, Run]]


@dataclass(frozen=True)
class SmallBatches:
    """How the batches of up to ``largest`` requests run: in the decision's own dtype, on the same copy of the
    weights with more parts compiled for them; in another dtype, on a second copy. ``compiled_parts``: all the parts
    compiled for them."""

    dtype: str
    compiled_parts: tuple[str, ...]
    largest: int


@dataclass(frozen=True)
class BatchRange:
    """Batch sizes ``first``..``last`` and the dtype (the copy of the weights) that runs them."""

    first: int
    last: int
    dtype: str
    compiled_parts: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        sizes = f"batch {self.first}" if self.first == self.last else f"batches {self.first}-{self.last}"
        compiled = f" (compiled: {', '.join(self.compiled_parts)})" if self.compiled_parts else ""
        return f"{self.dtype}{compiled} for {sizes}"


@dataclass(frozen=True)
class Decision:
    """What a model serves in: its dtype and compiled parts (every batch, or those above ``small.largest``), the
    second copy for small batches if any, and the medians that decided it (seconds)."""

    dtype: str
    compiled_parts: tuple[str, ...]
    reason: str
    # variant label -> probe label -> median seconds (for the log and the bench).
    medians: dict[str, dict[str, float]] = field(default_factory=dict)
    small: SmallBatches | None = None

    @property
    def second_copy(self) -> bool:
        """Whether small batches run on a second copy of the weights (in another dtype)."""
        return self.small is not None and self.small.dtype != self.dtype

    def ranges(self, largest: int) -> tuple[BatchRange, ...]:
        """The batch sizes 1..``largest`` by how they run (dtype, compiled parts), the largest batches first."""
        small = self.small
        if small is None or small.largest >= largest:
            return (BatchRange(1, largest, self.dtype, self.compiled_parts),)
        return (BatchRange(small.largest + 1, largest, self.dtype, self.compiled_parts),
                BatchRange(1, small.largest, small.dtype, small.compiled_parts))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Decision:
        values = json.loads(text)
        small = values.get("small")
        return cls(dtype=values["dtype"], compiled_parts=tuple(values["compiled_parts"]), reason=values["reason"],
                   medians=values.get("medians", {}),
                   small=None if small is None else SmallBatches(small["dtype"], tuple(small["compiled_parts"]),
                                                                 int(small["largest"])))


def measure_rounds(variants: Sequence[Variant], measure: Measure, *, clock: Callable[[], float] = time.perf_counter,
                   ) -> dict[Variant, list[Mapping[str, Run]]]:
    """Every variant measured in interleaved rounds: at least MIN_ROUNDS, up to MAX_ROUNDS within the budget."""
    samples: dict[Variant, list[Mapping[str, Run]]] = {variant: [] for variant in variants}
    started = clock()
    for round_index in range(MAX_ROUNDS):
        if round_index >= MIN_ROUNDS and clock() - started > ROUNDS_BUDGET_S:
            break
        shift = round_index % len(variants)
        for variant in (*variants[shift:], *variants[:shift]):
            samples[variant].append(measure(variant))
    return samples


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("inf")


@dataclass(frozen=True)
class _Plan:
    """One dtype as it would serve: the parts compiled for every batch, those compiled for small batches (the same
    and more), and per probe what its compiled parts save and its estimated seconds."""

    every: tuple[str, ...]
    small: tuple[str, ...]
    savings: dict[str, float]
    estimate: dict[str, float]

    def label(self, small_probe: str | None) -> str:
        extra = [name for name in self.small if name not in self.every]
        compiled = [", ".join(self.every)] if self.every else []
        if extra:
            compiled.append(f"at {small_probe} {', '.join(extra)}")
        return f" (compiled: {'; '.join(compiled)})" if compiled else ""


def _plans(samples: Mapping[Variant, Sequence[Mapping[str, Run]]], compilable: Mapping[str, Sequence[str]],
           compile_mode: str, medians: Mapping[str, Mapping[str, float]], small_probe: str | None,
           ) -> dict[str, _Plan]:
    """Per dtype, its plan (decide's first step). ``small_probe``: the probe of the small batches that may have
    parts of their own compiled (None: every batch runs alike)."""
    probes = list(next(iter(samples.values()))[0])

    def part_median(variant: Variant, name: str) -> float:
        runs = samples.get(variant, ())
        return _median([sum(run[probe].parts.get(name, 0.0) for probe in probes) for run in runs])

    def probe_part(variant: Variant, probe: str, name: str) -> float:
        return _median([run[probe].parts.get(name, 0.0) for run in samples.get(variant, ())])

    plans: dict[str, _Plan] = {}
    for dtype in dict.fromkeys(variant.dtype for variant in samples):
        eager, compiled = Variant(dtype, False), Variant(dtype, True)
        every: list[str] = []
        small: list[str] = []
        if compiled in samples:
            for name in compilable.get(dtype, ()):
                if compile_mode == "on" or part_median(compiled, name) * MARGIN <= part_median(eager, name):
                    every.append(name)
                    small.append(name)
                elif small_probe is not None and \
                        probe_part(compiled, small_probe, name) * MARGIN <= probe_part(eager, small_probe, name):
                    small.append(name)  # clearly faster compiled for a lone request, not for the load
        savings = {probe: sum(probe_part(eager, probe, name) - probe_part(compiled, probe, name)
                              for name in (small if probe == small_probe else every)) for probe in probes}
        plans[dtype] = _Plan(tuple(every), tuple(small), savings,
                             {probe: medians[eager.label][probe] - savings[probe] for probe in probes})
    return plans


def decide(samples: Mapping[Variant, Sequence[Mapping[str, Run]]], compilable: Mapping[str, Sequence[str]],
           compile_mode: str, *, split_at: int | None = None) -> Decision:
    """The decision from interleaved samples. Dtypes come float32 (the reference) first.

    ``compilable``: per dtype, the parts its compiled variant runs compiled (those that compiled).
    Per dtype, a part is compiled when --compile is on, or (auto) when its compiled median time over the probes is
    at least MARGIN times faster than eager. Each dtype's time per probe is then its eager time less what its
    compiled parts save. The dtype chosen is the fastest at the largest probe (throughput under load) among those
    whose median speed-up over float32, round by round, is at least MARGIN; else float32 (or the one dtype
    measured).

    ``split_at``: the batch size of the smallest probe, where the engine can serve small batches otherwise (None: it
    cannot, every batch runs alike). Then a part not compiled for every batch is compiled for the batches up to it
    when it is at least MARGIN times faster compiled at that probe (the same copy of the weights runs both ways);
    and another dtype is chosen for those batches (a second copy of the weights) when its median speed-up there
    over the throughput dtype, round by round, is at least MARGIN (the fastest such): the same rule, so that a
    second copy is kept only for a clear gain."""
    dtypes = list(dict.fromkeys(variant.dtype for variant in samples))
    probes = list(next(iter(samples.values()))[0])
    medians = {variant.label: {probe: _median([run[probe].seconds for run in runs]) for probe in probes}
               for variant, runs in samples.items()}
    small_probe = probes[0] if split_at is not None and len(probes) > 1 else None
    plans = _plans(samples, compilable, compile_mode, medians, small_probe)

    def per_round(dtype: str, probe: str) -> list[float]:
        """Each round's time of the dtype as it would serve (eager, less what its compiled parts save)."""
        return [run[probe].seconds - plans[dtype].savings[probe] for run in samples[Variant(dtype, False)]]

    def speed_up(dtype: str, over: str, probe: str) -> float:
        # Rounds pair the variants (measured back to back): the median of the paired ratios cancels the load that
        # changed between rounds.
        return statistics.median(a / b for a, b in zip(per_round(over, probe), per_round(dtype, probe), strict=False))

    def fastest(reference: str, probe: str) -> str:
        """The fastest dtype at ``probe`` among those at least MARGIN times as fast as ``reference`` there."""
        best = reference
        for dtype in dtypes:
            if dtype != reference and speed_up(dtype, reference, probe) >= MARGIN and \
                    plans[dtype].estimate[probe] < plans[best].estimate[probe]:
                best = dtype
        return best

    best = fastest(dtypes[0], probes[-1])
    small = None
    if split_at is not None and small_probe is not None:
        latency = fastest(best, small_probe)
        if latency != best or plans[best].small != plans[best].every:
            small = SmallBatches(latency, plans[latency].small, split_at)
    estimates = "; ".join(f"{dtype}{plans[dtype].label(small_probe)} "
                          + ", ".join(f"{probe} {plans[dtype].estimate[probe]:.4f} s" for probe in probes)
                          for dtype in dtypes)
    also = f", {BatchRange(1, small.largest, small.dtype, small.compiled_parts).label}" if small else ""
    rounds = min(len(r) for r in samples.values())
    reason = f"{best} chosen{also} (margin {MARGIN}x, medians of {rounds} rounds): {estimates}"
    return Decision(dtype=best, compiled_parts=plans[best].every, reason=reason, medians=medians, small=small)


class DecisionCache:
    """Decisions on disk, one JSON file per key: ``DIR/decisions/KEY.json``. ``None``: nothing is cached."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = None if directory is None else directory / "decisions"

    @staticmethod
    def key(facts: Mapping[str, Any]) -> str:
        """A key for everything the decision depends on (the model's files, hardware, versions, settings)."""
        text = json.dumps({"rules": RULES_VERSION, **facts}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self, key: str) -> Decision | None:
        if self.directory is None:
            return None
        path = self.directory / f"{key}.json"
        try:
            return Decision.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            _LOGGER.warning("ignoring the unreadable decision %s (%s): measuring again", path, error)
            return None

    def save(self, key: str, decision: Decision) -> None:
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.directory / f".{key}.{time.monotonic_ns()}.tmp"
            temporary.write_text(decision.to_json())
            # Atomic: replicas starting together never read half a file.
            temporary.replace(self.directory / f"{key}.json")
        except OSError as error:
            _LOGGER.warning("cannot cache the decision in %s (%s): the next start measures again",
                            self.directory, error)
