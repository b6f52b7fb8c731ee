"""What the load generator records per request and per concurrency level, and the ratio and percentile helpers."""

from __future__ import annotations

import collections
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, NaN for no values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded for the report; None where either side is missing or not positive."""
    if numerator is None or not denominator or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages: how busy it was around the measurement."""
    return [round(v, 2) for v in os.getloadavg()]


@dataclass
class Reply:
    """What one served request told the load generator."""

    request_id: str
    batch_size: int | None = None


@dataclass
class LevelResult:
    """One closed-loop run at a fixed concurrency."""

    concurrency: int
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    first_error: str | None = None

    def record(self, latency_s: float, reply: Reply) -> None:
        self.latencies_s.append(latency_s)
        self.replies.append(reply)
        self.requests += 1

    def record_error(self, error: Exception) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(error).__name__}: {error}"

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The level's figures for the report."""
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": round(self.throughput, 4),
            "latency_p50_s": round(percentile(self.latencies_s, 50), 4),
            "latency_p95_s": round(percentile(self.latencies_s, 95), 4),
        }
        sizes = [r.batch_size for r in self.replies if r.batch_size is not None]
        if sizes:
            # Per response, so a batch of 16 counts 16 times: the batch size the average request ran in.
            out["mean_batch_size"] = round(statistics.fmean(sizes), 2)
            out["batch_size_histogram"] = dict(sorted(collections.Counter(sizes).items()))
        if self.first_error:
            out["first_error"] = self.first_error
        return out


def latency_summary(result: LevelResult, times: dict[str, tuple[float, float]], direct_p50: float) -> dict[str, Any]:
    """Concurrency 1 against the in-process calls made alternately with it, and what serving added."""
    p50 = percentile(result.latencies_s, 50)
    summary: dict[str, Any] = {
        "p50_s": round(p50, 4),
        "p95_s": round(percentile(result.latencies_s, 95), 4),
        "inprocess_p50_s": round(direct_p50, 4),
        "ratio_p50_to_inprocess": ratio(p50, direct_p50),
        "requests": result.requests,
    }
    matched = [(latency, times[reply.request_id]) for latency, reply in zip(result.latencies_s, result.replies)
               if reply.request_id in times]
    if matched:
        # Latency minus the server's own model time: what serving adds, free of the model time's noise.
        overhead = statistics.median(latency - compute for latency, (_, compute) in matched)
        summary["server_compute_p50_s"] = round(statistics.median(compute for _, (_, compute) in matched), 4)
        summary["overhead_p50_ms"] = round(overhead * 1000, 2)
        summary["queue_p50_ms"] = round(statistics.median(queued for _, (queued, _) in matched) * 1000, 2)
        summary["ratio_from_overhead"] = ratio(direct_p50 + overhead, direct_p50)
    return summary


def level_summary(result: LevelResult, limit: dict[str, Any]) -> dict[str, Any]:
    """One level's figures with its throughput as a fraction of the in-process limits."""
    summary = result.summary()
    summary["ratio_to_batch_limit"] = ratio(result.throughput, limit["batch_throughput_rps"])
    summary["ratio_to_single_limit"] = ratio(result.throughput, limit["single_throughput_rps"])
    return summary
