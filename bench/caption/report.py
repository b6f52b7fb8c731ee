"""The sections of the caption benchmark's JSON: the machine, the set-up, and the comparison against the targets."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.caption.images import ImagePool
from bench.caption.limit import InProcess
from bench.caption.plan import Plan
from bench.caption.stats import load_average, ratio
from imagewire_serving.device import dtype_name

if TYPE_CHECKING:
    from captioner.tiny import BlipPreset

# The targets: serving overhead at concurrency 1, and how much of the batched limit survives serving.
TARGET_C1_LATENCY_RATIO = 1.10
TARGET_C16_THROUGHPUT_RATIO = 0.8


def machine(model: InProcess) -> dict[str, Any]:
    """What the figures depend on besides the code: cores, threads, OpenMP settings, load."""
    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": model.torch_threads,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_start": load_average(),
    }


def setup(preset_name: str, preset: BlipPreset, model_dir: Path, model: InProcess, pool: ImagePool, plan: Plan,
          *, max_new_tokens: int, image_size: int) -> dict[str, Any]:
    """The model, the generation options and the images every path used, and the plan."""
    return {
        "model_preset": preset_name,
        "preset": asdict(preset),
        "model_dir": str(model_dir),
        "device": str(model.backend.device),
        "dtype": dtype_name(model.backend.dtype),
        "max_new_tokens": max_new_tokens,
        "new_tokens_generated": model.new_tokens(pool.decoded(1)[0]),
        "num_beams": 1,
        "image": f"{image_size}x{image_size} PNG, ~{pool.mean_size()} B",
        "plan": asdict(plan),
    }


def compare(limit: dict[str, Any], grpc: dict[str, Any], http: dict[str, Any] | None) -> dict[str, Any]:
    """gRPC over HTTP per level, the batching ceiling, and whether the targets were met."""
    per_level = {
        level: ratio(grpc["throughput"][level]["throughput_rps"], http["throughput"][level]["throughput_rps"])
        for level in grpc["throughput"]
        if http is not None and level in http["throughput"]
    }
    c1 = grpc["latency_c1"]["ratio_p50_to_inprocess"]
    c16 = grpc["throughput"].get("16", {}).get("ratio_to_batch_limit")
    return {
        "grpc_over_http_throughput": per_level,
        "batching_gain_ceiling": limit["batching_gain"],
        "targets": {
            "c1_latency_ratio": {
                "value": c1,
                "value_from_overhead": grpc["latency_c1"].get("ratio_from_overhead"),
                "max": TARGET_C1_LATENCY_RATIO,
                "met": c1 is not None and c1 <= TARGET_C1_LATENCY_RATIO,
            },
            "c16_throughput_ratio_to_batch_limit": {
                "value": c16,
                "min": TARGET_C16_THROUGHPUT_RATIO,
                "met": c16 is not None and c16 >= TARGET_C16_THROUGHPUT_RATIO,
            },
        },
    }



def emit(result: dict[str, Any], out: Path | None) -> int:
    """Print a benchmark's JSON (and write it to ``out``); the command's exit status."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
    return 0
