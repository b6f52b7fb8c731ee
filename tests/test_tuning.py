"""--dtype auto and --compile auto: interleaved rounds, the margin, the cached decision (injected timings)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from imagewire_serving import tuning
from imagewire_serving.tuning import (
    BatchRange,
    Decision,
    DecisionCache,
    Run,
    SmallBatches,
    Variant,
    decide,
    measure_rounds,
)

F32, BF16 = Variant("float32", compiled=False), Variant("bfloat16", compiled=False)
F32_C, BF16_C = Variant("float32", compiled=True), Variant("bfloat16", compiled=True)


def runs(batch1: float, batch16: float, encoder: float = 0.0) -> dict[str, Run]:
    """One round's probes; the vision encoder takes ``encoder`` of each (scaled by the batch)."""
    return {"batch 1": Run(batch1, {"vision encoder": encoder}),
            "batch 16": Run(batch16, {"vision encoder": encoder * 16})}


def noisy(seconds: Mapping[Variant, tuple[float, float]], noise: float, rng: random.Random
          ) -> tuning.Measure:
    """Measurements around the given (batch 1, batch 16) times, each off by up to ``noise`` either way."""
    def measure(variant: Variant) -> dict[str, Run]:
        one, sixteen = seconds[variant]
        return runs(one * rng.uniform(1 - noise, 1 + noise), sixteen * rng.uniform(1 - noise, 1 + noise))
    return measure


def test_twenty_starts_under_noise_choose_the_same_dtype_where_the_difference_is_within_the_margin() -> None:
    """bfloat16 3% faster, timings off by up to 8% each: float32 every time, never a coin toss per replica."""
    times = {F32: (0.100, 1.00), BF16: (0.097, 0.97)}
    chosen = {decide(measure_rounds([F32, BF16], noisy(times, 0.08, random.Random(seed))), {}, "off").dtype
              for seed in range(20)}
    assert chosen == {"float32"}


def test_twenty_starts_under_heavy_noise_choose_a_dtype_that_is_clearly_faster() -> None:
    """bfloat16 2.2x faster in batches (one busy core: timings off by up to 30%): bfloat16 every time."""
    times = {F32: (0.100, 1.60), BF16: (0.110, 0.72)}
    chosen = {decide(measure_rounds([F32, BF16], noisy(times, 0.30, random.Random(seed))), {}, "off").dtype
              for seed in range(20)}
    assert chosen == {"bfloat16"}


def test_the_load_probe_decides_and_the_reason_gives_both_probes() -> None:
    # Slower alone, 2x faster in a batch of 16: chosen for throughput, the batch-1 figure in the reason.
    decision = decide({F32: [runs(0.10, 1.6)] * 3, BF16: [runs(0.12, 0.8)] * 3}, {}, "off")
    assert decision.dtype == "bfloat16"
    assert "batch 1 0.1200 s" in decision.reason and "batch 16 0.8000 s" in decision.reason
    assert decision.medians["bfloat16 eager"] == {"batch 1": 0.12, "batch 16": 0.8}


def test_compile_auto_keeps_a_part_compiled_only_when_it_measures_the_margin_faster() -> None:
    eager = [runs(0.10, 1.0, encoder=0.05)] * 3
    faster = [runs(0.07, 0.52, encoder=0.02)] * 3  # the encoder 2.5x faster compiled
    barely = [runs(0.092, 0.90, encoder=0.042)] * 3  # 19% faster: within the margin
    chosen = decide({F32: eager, F32_C: faster}, {"float32": ("vision encoder",)}, "auto")
    assert chosen.compiled_parts == ("vision encoder",)
    kept_eager = decide({F32: eager, F32_C: barely}, {"float32": ("vision encoder",)}, "auto")
    assert kept_eager.compiled_parts == ()
    # --compile on keeps what compiled, measured faster or not.
    forced = decide({F32: eager, F32_C: barely}, {"float32": ("vision encoder",)}, "on")
    assert forced.compiled_parts == ("vision encoder",)


def test_each_part_is_kept_compiled_on_its_own_measure() -> None:
    """The vision encoder 2.5x faster compiled, the text decoder slower compiled (as measured in bfloat16 on a CPU
    whose decoding steps are bound by reading the weights): the encoder compiled, the decoder eager."""
    def parts(batch1: float, encoder: float, decoder: float) -> dict[str, Run]:
        return {"batch 1": Run(batch1, {"vision encoder": encoder, "text decoder": decoder}),
                "batch 16": Run(batch1 * 16, {"vision encoder": encoder * 16, "text decoder": decoder * 16})}

    samples = {BF16: [parts(0.10, encoder=0.05, decoder=0.04)] * 3,
               BF16_C: [parts(0.08, encoder=0.02, decoder=0.05)] * 3}
    decision = decide(samples, {"bfloat16": ("vision encoder", "text decoder")}, "auto")
    assert decision.compiled_parts == ("vision encoder",)
    assert "(compiled: vision encoder)" in decision.reason


def decoder_runs(batch1: float, batch16: float, decoder1: float, decoder16: float) -> dict[str, Run]:
    return {"batch 1": Run(batch1, {"text decoder": decoder1}), "batch 16": Run(batch16, {"text decoder": decoder16})}


def test_a_part_clearly_faster_compiled_only_for_a_lone_request_is_compiled_for_it_on_the_same_copy() -> None:
    """The small preset's decoder in bfloat16 on an AVX512-BF16 EPYC: 1.68x faster compiled alone (a step's
    per-operation overhead), 1.04x in a batch of 16 (1.22x over both probes, within the margin): compiled for
    batch 1 only, on the one copy of the weights."""
    samples = {BF16: [decoder_runs(0.169, 0.607, 0.127, 0.195)] * 3,
               BF16_C: [decoder_runs(0.117, 0.600, 0.0755, 0.188)] * 3}
    decision = decide(samples, {"bfloat16": ("text decoder",)}, "auto", split_at=1)
    assert (decision.dtype, decision.compiled_parts) == ("bfloat16", ())
    assert decision.small == SmallBatches("bfloat16", ("text decoder",), 1) and not decision.second_copy
    assert [r.label for r in decision.ranges(16)] == ["bfloat16 for batches 2-16",
                                                      "bfloat16 (compiled: text decoder) for batch 1"]
    assert decision.reason.startswith("bfloat16 chosen, bfloat16 (compiled: text decoder) for batch 1 (margin")
    assert "bfloat16 (compiled: at batch 1 text decoder) batch 1 0.1175 s, batch 16 0.6070 s" in decision.reason
    # An engine that runs every batch alike compiles it nowhere; --compile on, everywhere.
    assert decide(samples, {"bfloat16": ("text decoder",)}, "auto").small is None
    forced = decide(samples, {"bfloat16": ("text decoder",)}, "on", split_at=1)
    assert (forced.compiled_parts, forced.small) == (("text decoder",), None)
    # Only 1.2x faster alone: eager for every batch.
    barely = {BF16: samples[BF16], BF16_C: [decoder_runs(0.148, 0.600, 0.106, 0.188)] * 3}
    assert decide(barely, {"bfloat16": ("text decoder",)}, "auto", split_at=1).small is None


def test_a_dtype_is_judged_with_its_parts_compiled_as_they_would_serve() -> None:
    """Eager, bfloat16 is barely faster; compiled (its encoder 3x faster), it is clearly faster: bfloat16."""
    samples = {
        F32: [runs(0.10, 1.0, encoder=0.040)] * 3, F32_C: [runs(0.10, 1.0, encoder=0.039)] * 3,
        BF16: [runs(0.098, 0.97, encoder=0.045)] * 3, BF16_C: [runs(0.068, 0.49, encoder=0.015)] * 3,
    }
    decision = decide(samples, {"float32": ("vision encoder",), "bfloat16": ("vision encoder",)}, "auto")
    assert (decision.dtype, decision.compiled_parts) == ("bfloat16", ("vision encoder",))


def test_rounds_interleave_the_variants_in_a_rotated_order_and_stop_within_the_budget() -> None:
    order: list[str] = []
    now = [0.0]

    def measure(variant: Variant) -> dict[str, Run]:
        order.append(variant.dtype)
        now[0] += 10.0  # every run takes 10 s of the budget
        return runs(1.0, 1.0)

    samples = measure_rounds([F32, BF16], measure, clock=lambda: now[0])
    assert order[:4] == ["float32", "bfloat16", "bfloat16", "float32"]
    # At least MIN_ROUNDS, and none started once the budget was spent.
    assert len(samples[F32]) == len(samples[BF16]) == tuning.MIN_ROUNDS
    quick = measure_rounds([F32, BF16], lambda variant: runs(1.0, 1.0), clock=lambda: 0.0)
    assert len(quick[F32]) == tuning.MAX_ROUNDS


def test_the_cache_keeps_a_decision_by_its_facts_and_ignores_a_broken_file(tmp_path: Path) -> None:
    cache = DecisionCache(tmp_path)
    facts = {"model": "abc", "hardware": "EPYC (AVX512-BF16)", "compile": "auto"}
    key = DecisionCache.key(facts)
    assert key == DecisionCache.key(dict(reversed(list(facts.items()))))  # order does not matter
    assert key != DecisionCache.key({**facts, "hardware": "Xeon (AMX-BF16)"})
    assert cache.load(key) is None
    decision = Decision("bfloat16", ("vision encoder",), "bfloat16 chosen", {"bfloat16 eager": {"batch 1": 0.1}})
    cache.save(key, decision)
    assert cache.load(key) == decision
    (tmp_path / "decisions" / f"{key}.json").write_text("{not json")
    assert cache.load(key) is None
    assert DecisionCache(None).load(key) is None


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_a_part_that_compiled_in_no_dtype_is_never_chosen(mode: str) -> None:
    decision = decide({F32: [runs(0.1, 1.0, encoder=0.05)] * 3}, {"float32": ()}, mode)
    assert decision.compiled_parts == ()


def test_a_lone_request_clearly_faster_in_another_dtype_gets_its_own_range() -> None:
    """float32 1.5x faster alone, bfloat16 2x faster in a batch of 16: bfloat16 for throughput, and (where the
    engine can keep a second copy) float32 for batches up to the smallest probe's."""
    samples = {F32: [runs(0.10, 1.6)] * 3, BF16: [runs(0.15, 0.8)] * 3}
    decision = decide(samples, {}, "off", split_at=1)
    assert decision.dtype == "bfloat16" and decision.small == SmallBatches("float32", (), 1)
    assert decision.reason.startswith("bfloat16 chosen, float32 for batch 1 (margin")
    assert decision.ranges(16) == (BatchRange(2, 16, "bfloat16"), BatchRange(1, 1, "float32"))
    assert [batches.label for batches in decision.ranges(16)] == ["bfloat16 for batches 2-16", "float32 for batch 1"]
    # An engine that cannot keep two copies (the animator) gets one dtype, for throughput.
    assert decide(samples, {}, "off").small is None
    assert decide(samples, {}, "off").ranges(16) == (BatchRange(1, 16, "bfloat16"),)


def test_a_lone_request_only_slightly_faster_in_another_dtype_keeps_one_copy() -> None:
    """float32 15% faster alone (within the margin): one copy, bfloat16 for every batch."""
    decision = decide({F32: [runs(0.10, 1.6)] * 3, BF16: [runs(0.115, 0.8)] * 3}, {}, "off", split_at=1)
    assert (decision.dtype, decision.small) == ("bfloat16", None)


def test_the_small_batches_copy_keeps_its_own_compiled_parts() -> None:
    """bfloat16 wins batches once its encoder is compiled; float32 wins alone, eager (its compiled encoder is no
    faster): each copy with its own parts."""
    samples = {
        F32: [runs(0.10, 1.6, encoder=0.04)] * 3, F32_C: [runs(0.10, 1.6, encoder=0.039)] * 3,
        BF16: [runs(0.20, 1.5, encoder=0.10)] * 3, BF16_C: [runs(0.16, 0.7, encoder=0.06)] * 3,
    }
    decision = decide(samples, {"float32": ("vision encoder",), "bfloat16": ("vision encoder",)}, "auto",
                      split_at=1)
    assert (decision.dtype, decision.compiled_parts) == ("bfloat16", ("vision encoder",))
    assert decision.small == SmallBatches("float32", (), 1)


def test_a_cached_decision_keeps_its_ranges(tmp_path: Path) -> None:
    cache = DecisionCache(tmp_path)
    decision = Decision("bfloat16", ("vision encoder",), "bfloat16 chosen, float32 for batch 1", {},
                        SmallBatches("float32", (), 1))
    cache.save("key", decision)
    assert cache.load("key") == decision
