"""The machine's limit: the model called in this process with no serving around it, one image and in batches."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.caption.images import ImagePool
from bench.caption.stats import ratio


class InProcess:
    """The model called directly: the same loader, device and options the servers use, in one dtype."""

    def __init__(self, model_dir: Path, device_spec: str, dtype_name: str, max_new_tokens: int,
                 compiled_parts: tuple[str, ...] = (), lone_parts: tuple[str, ...] = ()) -> None:
        import torch

        from captioner.backend import GenerationOptions
        from captioner.families import load_captioner
        from imagewire_serving.device import DTYPES, resolve_device

        device = resolve_device(device_spec)
        self.dtype = dtype_name
        self.backend = load_captioner(str(model_dir), device, DTYPES[dtype_name])
        self.options = GenerationOptions(max_new_tokens=max_new_tokens, num_beams=1)
        self.torch_threads = torch.get_num_threads()
        # The parts the server of this dtype runs compiled, for every batch or for a batch of one (``lone_parts``),
        # compiled alike (the warm-up compiles them).
        self.compiled_parts = compiled_parts
        for part in self.backend.compile_parts():
            if part.name in {*compiled_parts, *lone_parts}:
                part.compile(device)
                part.use(compiled=True, up_to=None if part.name in compiled_parts else 1)

    def generate(self, images: list[Image.Image]) -> float:
        """Caption the images in one call; returns the seconds it took."""
        started = time.perf_counter()
        self.backend.generate(images, [""] * len(images), self.options)
        return time.perf_counter() - started

    def new_tokens(self, image: Image.Image) -> int:
        """How many tokens one greedy caption really generates: a random model may stop early at [SEP]."""
        import torch

        backend = self.backend
        inputs = backend.processor(images=[image], return_tensors="pt")
        with torch.inference_mode():
            output = backend.model.generate(
                pixel_values=inputs["pixel_values"].to(backend.device, backend.dtype),
                max_new_tokens=self.options.max_new_tokens, num_beams=1, do_sample=False,
            )
        return int(output.shape[1]) - 1  # the first column is the [DEC]/bos token, not generated


def measure_limit(model: InProcess, pool: ImagePool, singles: int, batches: int, batch_size: int,
                  *, warm_up: bool) -> dict[str, Any]:
    """The physical limit: one image at a time and whole batches, on distinct images."""
    if warm_up:
        model.generate(pool.decoded(1))
        model.generate(pool.decoded(batch_size))  # the first large batch allocates its buffers
    single_s = [model.generate(pool.decoded(1)) for _ in range(singles)]
    batch_s = [model.generate(pool.decoded(batch_size)) for _ in range(batches)]
    single_rps = len(single_s) / sum(single_s)
    batch_rps = batch_size * len(batch_s) / sum(batch_s)
    return {
        "single_latency_p50_s": round(statistics.median(single_s), 4),
        "single_latency_min_s": round(min(single_s), 4),
        "single_latency_max_s": round(max(single_s), 4),
        "single_throughput_rps": round(single_rps, 4),
        "batch_size": batch_size,
        "batch_seconds": [round(b, 3) for b in batch_s],
        "batch_throughput_rps": round(batch_rps, 4),
        "batching_gain": ratio(batch_rps, single_rps),
    }


def measure_again(model: InProcess, pool: ImagePool, limit: dict[str, Any], batch_size: int) -> None:
    """Measure the limit once more at the end and add it to ``limit``, with how far the batch rate drifted."""
    again = measure_limit(model, pool, 3, 1, batch_size, warm_up=False)
    limit["at_end"] = again
    limit["drift_batch_throughput"] = ratio(again["batch_throughput_rps"], limit["batch_throughput_rps"])
