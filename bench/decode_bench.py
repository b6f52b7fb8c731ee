"""Chunked decode per family: the first chunk, the whole streamed decode and one decode in one piece, side by side.

For a model of any family (``--model`` DIR or hub id, else the ``--preset`` built locally: ``ltx-tiny``,
``wan-tiny``, ``tiny``, ``bench``), one denoising run gives the latents; they are then decoded alternately as the
server streams them (``decode_chunk_size`` = ``--chunk``, the model's default if absent) and in one piece
(``decode_chunk_size`` = ``num_frames``), ``--repeats`` times each. One JSON object reports the medians:

- ``first_chunk_s``: until the streamed decode's first frames exist (when their bytes can leave);
- ``streamed_s`` and ``whole_s``: the whole streamed decode and the decode in one piece, and their ratios;
- ``psnr_db``: the streamed frames against the one-piece decode's (``inf`` where identical). SVD's temporal
  decoder sees each chunk alone and LTX-Video's tiles are crossfaded, so theirs are finite; Wan's causal decode
  is the same whatever the chunk.

    python -m bench.decode_bench [--preset ltx-tiny] [--model DIR] [--device auto] [--num-frames N] [--chunk N]
                                 [--repeats 3] [--torch-threads 1]

On a GPU with the released weights this is the measure of what LTX-Video's temporal tiles cost in fidelity and
VAE time (see docs/models.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any

import numpy as np
import torch

from animator import families, tiny
from animator.limits import EngineLimits
from animator.params import AnimateInput, resolve
from animator.quality import psnr
from bench import output
from bench.animate_bench import conditioning_image
from imagewire_serving.device import choose_dtype, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory or hub id (default: the preset, built if needed)")
    parser.add_argument("--preset", choices=sorted(tiny.MODELS), default="ltx-tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-frames", type=int, help="default: the model's")
    parser.add_argument("--chunk", type=int, help="decode_chunk_size of the streamed decode (default: the model's)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of the one run making the latents")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads; 0 = torch's default")
    output.add_out(parser)
    return parser.parse_args(argv)


def timed_decode(backend: Any, latents: torch.Tensor, params: Any) -> tuple[float, float, np.ndarray]:
    """(seconds to the first chunk, seconds in all, the frames) of one decode as the server runs it."""
    started = time.perf_counter()
    chunks = []
    first = 0.0
    for chunk in backend.decode(latents, params):
        first = first or time.perf_counter() - started
        chunks.append(chunk)
    if backend.device.type == "cuda":
        torch.cuda.synchronize(backend.device)
    return first, time.perf_counter() - started, np.concatenate(chunks)


def main() -> None:
    args = parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = args.model or str(tiny.ensure_model(args.preset))
    device = resolve_device(args.device)
    backend = families.load(model, model, device, choose_dtype("auto", device).candidates[0])
    limits = EngineLimits(max_num_frames=1000, max_pixels_per_frame=4096 * 4096)
    request = AnimateInput(image=b"bench", seed=7, num_frames=args.num_frames, num_inference_steps=args.steps,
                           decode_chunk_size=args.chunk, prompt="" if "prompt" in _fields(backend) else None)
    streamed_params = resolve(request, model, backend.accepts, limits).params
    whole_params = dataclasses.replace(streamed_params, decode_chunk_size=streamed_params.num_frames)
    image = conditioning_image(streamed_params.width, streamed_params.height)
    latents = backend.denoise(image, streamed_params, lambda step: None)
    timed_decode(backend, latents, whole_params)  # warm-up
    runs: dict[str, list[float]] = {"first_chunk_s": [], "streamed_s": [], "whole_s": []}
    for _ in range(args.repeats):  # alternating, so drifting load falls on both alike
        first, streamed_s, streamed = timed_decode(backend, latents, streamed_params)
        _, whole_s, whole = timed_decode(backend, latents, whole_params)
        runs["first_chunk_s"].append(first)
        runs["streamed_s"].append(streamed_s)
        runs["whole_s"].append(whole_s)
    medians = {name: round(statistics.median(values), 4) for name, values in runs.items()}
    report = {
        "benchmark": "decode", "model": model, "family": backend.family, "device": str(device),
        "dtype": str(backend.dtype), "torch_threads": torch.get_num_threads(), "width": streamed_params.width,
        "height": streamed_params.height, "num_frames": streamed_params.num_frames,
        "decode_chunk_size": streamed_params.decode_chunk_size, "repeats": args.repeats, **medians,
        "ratio_first_chunk_over_whole": round(medians["first_chunk_s"] / medians["whole_s"], 3),
        "ratio_streamed_over_whole": round(medians["streamed_s"] / medians["whole_s"], 3),
        "psnr_db": round(psnr(streamed, whole), 2),
    }
    output.emit(report, args.out)


def _fields(backend: Any) -> set[str]:
    return {field.name for field in backend.accepts.own}


if __name__ == "__main__":
    main()
