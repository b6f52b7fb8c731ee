"""The sections of the caption benchmark's JSON: the machine, the set-up, and the comparison against the targets."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.caption.images import ImagePool
from bench.caption.limit import InProcess
from bench.caption.plan import Plan
from bench.caption.stats import load_average, ratio

if TYPE_CHECKING:
    from captioner.tiny import Preset

# The targets. Against the model called in process in the same dtype (issue 12; issue 19 raised the batch-limit
# share to 0.9): what serving costs one caller, and how much of the batch-16 rate survives serving.
TARGET_C1_VS_INPROCESS = 1.10
TARGET_C16_VS_BATCH_LIMIT = 0.9
# Against the one-at-a-time FastAPI baseline in float32, eager: what the whole server (dtype, compiled parts,
# threads, batching) gains (issue 19): (c=1 p50 ratio at most, c=16 throughput ratio at least) by preset, on a
# device with low-precision arithmetic (a CPU with AMX or AVX512-BF16, a GPU) and on a CPU without it.
BASELINE_TARGETS = {"large": {"low precision": (0.35, 6.0), "float32 only": (1.0, 1.0)}}
DEFAULT_BASELINE_TARGETS = {"low precision": (0.8, 5.0), "float32 only": (1.0, 2.5)}


def baseline_targets(preset: str, low_precision: bool) -> tuple[float, float]:
    """The c=1 and c=16 targets against the baseline for ``preset`` on this kind of device."""
    return BASELINE_TARGETS.get(preset, DEFAULT_BASELINE_TARGETS)["low precision" if low_precision else "float32 only"]


def machine(model: InProcess) -> dict[str, Any]:
    """What the figures depend on besides the code: cores, threads, OpenMP settings, CPU features, load."""
    from imagewire_serving.device import Capabilities
    from imagewire_serving.threads import WAIT_VARIABLES, usable_cpus

    return {
        "cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "processor": platform.processor() or platform.machine(),
        "cpu_native_low_precision": Capabilities.detect(model.backend.device).cpu_description(),
        "torch_threads": model.torch_threads,
        "openmp_env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", *WAIT_VARIABLES)},
        "load_average_start": load_average(),
    }


def setup(preset_name: str, preset: Preset, model_dir: Path, model: InProcess, pool: ImagePool, plan: Plan,
          *, max_new_tokens: int, image_size: int) -> dict[str, Any]:
    """The model, the generation options and the images every path used, and the plan."""
    return {
        "model_preset": preset_name,
        "preset": asdict(preset),
        "model_dir": str(model_dir),
        "device": str(model.backend.device),
        "max_new_tokens": max_new_tokens,
        "new_tokens_generated": model.new_tokens(pool.decoded(1)[0]),
        "num_beams": 1,
        "image": f"{image_size}x{image_size} PNG, ~{pool.mean_size()} B",
        "plan": asdict(plan),
    }


def _target(value: float | None, bound: float, *, most: bool) -> dict[str, Any]:
    met = value is not None and (value <= bound if most else value >= bound)
    return {"value": value, "max" if most else "min": bound, "met": met}


def compare(limits: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]], auto_dtype: str,
            baseline: tuple[float, float]) -> dict[str, Any]:
    """Each gRPC server against the in-process model of its dtype and against the baseline, with the targets
    (``baseline``: those against the baseline, :func:`baseline_targets`)."""
    http = results.get("http")
    out: dict[str, Any] = {"auto_dtype": auto_dtype}
    for name, grpc in results.items():
        if name == "http":
            continue
        c1, levels = grpc["latency_c1"], grpc["throughput"]
        c16 = levels.get("16", {})
        section: dict[str, Any] = {
            "dtype": grpc["dtype"],
            "batching_gain_ceiling": limits[grpc["dtype"]]["batching_gain"],
            "c1_p50_vs_inprocess": _target(c1["ratio_p50_to_inprocess"], TARGET_C1_VS_INPROCESS, most=True),
            "c1_p50_vs_inprocess_from_overhead": c1.get("ratio_from_overhead"),
            "c16_throughput_vs_batch_limit": _target(c16.get("ratio_to_batch_limit"), TARGET_C16_VS_BATCH_LIMIT,
                                                     most=False),
        }
        if http is not None:
            section["c1_p50_vs_baseline"] = _target(ratio(c1["p50_s"], http["latency_c1"]["p50_s"]),
                                                    baseline[0], most=True)
            http_c16 = http["throughput"].get("16", {}).get("throughput_rps")
            section["c16_throughput_vs_baseline"] = _target(ratio(c16.get("throughput_rps"), http_c16),
                                                            baseline[1], most=False)
            section["throughput_vs_baseline_per_level"] = {
                level: ratio(figures["throughput_rps"], http["throughput"][level]["throughput_rps"])
                for level, figures in levels.items() if level in http["throughput"]
            }
        out[name] = section
    return out



