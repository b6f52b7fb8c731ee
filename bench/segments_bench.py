"""Longer and smoother videos: what frame interpolation costs per output frame against one denoising step, and the
time to the first video byte of a 3-segment job against a 1-segment one, side by side in one run.

On the benchmark-size SVD (``animator.tiny`` preset ``bench``, or ``--model``), with an in-process
``imagewire-animator`` on 127.0.0.1 port 0:

- ``first_byte``: the same request with ``segments`` 1 and 3 through the real server (the typed client, the video
  written to a file), alternated ABBA after one untimed run of each: the medians of the time to the first video
  byte (target: the 3-segment job within 10% of the 1-segment one, since its first segment streams while the
  later ones are denoised) and of the total time;
- ``interpolation``: on the server's loaded backend, alternately, a denoising run (its steps timed between step
  callbacks, the first excluded because it includes encoding the image) and ``animator.interpolation.between``
  over each pair of that run's decoded frames, at factors 2 and 4; the cost per interpolated frame is a pair's
  time divided by the ``factor - 1`` frames it makes.

    python -m bench.segments_bench [--repeats 4] [--torch-threads 1] [--segments 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from imagewire.client import AnimateClient

from animator import tiny
from animator.backend import Step, VideoBackend
from animator.interpolation import between
from animator.limits import EngineLimits
from animator.params import AnimateInput, GenerationParams, resolve
from animator.settings import AnimatorSettings
from bench import output
from bench.animate_bench import BackgroundServer, add_model_options, conditioning_image, run_served
from imagewire_serving.settings import ServerSettings

FACTORS = (2, 4)
TARGET_FIRST_BYTE_RATIO = 1.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser, repeats=4)
    parser.add_argument("--segments", type=int, default=3, help="the longer job's segments")
    parser.add_argument("--seed", type=int, default=0)
    output.add_out(parser)
    return parser.parse_args(argv)


def first_bytes(address: str, params: GenerationParams, segments: int, repeats: int, seed: int) -> dict[str, Any]:
    """The 1-segment and the ``segments`` job through the server, ABBA, after one untimed run of each."""
    request = {"width": params.width, "height": params.height, "num_frames": params.num_frames,
               "num_inference_steps": params.num_inference_steps, "decode_chunk_size": params.decode_chunk_size,
               "seed": seed}
    runs: dict[int, list[tuple[float, float, int]]] = {1: [], segments: []}
    with tempfile.TemporaryDirectory() as scratch, AnimateClient(address, timeout=3600) as client:
        png = Path(scratch) / "image.png"
        conditioning_image(params.width, params.height).save(png)
        image, out = png.read_bytes(), Path(scratch) / "out.mp4"
        for count in runs:
            run_served(client, image, {**request, "segments": count}, out)  # untimed
        for repeat in range(repeats):
            for count in (1, segments) if repeat % 4 in (0, 3) else (segments, 1):
                runs[count].append(run_served(client, image, {**request, "segments": count}, out))
    first = {n: statistics.median(r[0] for r in runs[n]) for n in runs}
    total = {n: statistics.median(r[1] for r in runs[n]) for n in runs}
    ratio = first[segments] / first[1]
    figures = {f"{n}_segments": {"first_byte_s": round(first[n], 3), "total_s": round(total[n], 3),
                                 "video_bytes": runs[n][-1][2], "first_byte_runs_s": [round(r[0], 3) for r in runs[n]]}
               for n in runs}
    return {**figures, "ratio_first_byte": round(ratio, 4), "ratio_total": round(total[segments] / total[1], 4),
            "target_ratio_first_byte": TARGET_FIRST_BYTE_RATIO, "met": ratio <= TARGET_FIRST_BYTE_RATIO}


def interpolation(backend: VideoBackend, params: GenerationParams, repeats: int) -> dict[str, Any]:
    """Denoising steps and interpolated frames, alternated, on the server's backend."""
    image = conditioning_image(params.width, params.height)
    steps: list[float] = []
    per_frame: dict[int, list[float]] = {factor: [] for factor in FACTORS}
    for _ in range(repeats):
        ends: list[float] = []

        def on_step(_step: Step, ends: list[float] = ends) -> None:
            ends.append(time.perf_counter())

        latents = backend.denoise(image, params, on_step)
        steps.extend(later - earlier for earlier, later in itertools.pairwise(ends[1:]))
        frames = np.concatenate(list(backend.decode(latents, params)))
        for factor in FACTORS:
            for a, b in itertools.pairwise(frames):
                started = time.perf_counter()
                between(a, b, factor)
                per_frame[factor].append((time.perf_counter() - started) / (factor - 1))
    step_s = statistics.median(steps)
    figures: dict[str, Any] = {"step_s": round(step_s, 4), "steps_measured": len(steps)}
    for factor, times in per_frame.items():
        frame_s = statistics.median(times)
        figures[f"factor_{factor}"] = {"per_output_frame_s": round(frame_s, 5),
                                       "ratio_per_frame_over_step": round(frame_s / step_s, 4),
                                       "frames_measured": len(times)}
    return figures


def main() -> None:
    args = parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = args.model or str(tiny.ensure_model(args.preset))
    limits = EngineLimits(max_segments=max(args.segments, 1))
    # float32 and eager, as decided: the start-up's dtype and compile measurements would take minutes and are
    # another benchmark's subject.
    settings = AnimatorSettings(server=ServerSettings(port=0, device="cpu", models=(model,), dtype="float32",
                                                      compile="off", threads=torch.get_num_threads()), limits=limits)
    server = BackgroundServer(settings)
    address = server.start()
    try:
        backend = server.app.engine().model("")
        params = resolve(AnimateInput(image=b"bench", seed=args.seed), model, backend.accepts, limits).params
        report = {
            "benchmark": "segments", "model": model, "device": "cpu", "dtype": str(backend.dtype),
            "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
            "width": params.width, "height": params.height, "num_frames": params.num_frames,
            "num_inference_steps": params.num_inference_steps, "repeats": args.repeats,
            "first_byte": first_bytes(address, params, args.segments, args.repeats, args.seed),
            "interpolation": interpolation(backend, params, args.repeats),
        }
    finally:
        server.stop()
    output.emit(report, args.out)


if __name__ == "__main__":
    main()
