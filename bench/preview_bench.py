"""The cost of previews during denoising: a denoising step with a preview against one without, side by side.

On the benchmark-size SVD (``animator.tiny`` preset ``bench``, or ``--model``), this runs the real denoising loop
(``SvdBackend.denoise``) alternately without previews and with a preview after every step (the server's own
``generation.make_preview``: the latent projection of 4 frames and their animated WebP), and prints one JSON
object with the medians of:

- ``step_s``: one denoising step without previews (the intervals between step callbacks, the first excluded
  because it includes encoding the image);
- ``step_with_preview_s``: the same with a preview after every step;
- ``preview_s``: the preview itself, timed around ``make_preview`` inside the runs with previews;
- ``ratio_preview_over_step`` (target < 0.05) and ``ratio_step_with_over_without``.

    python -m bench.preview_bench [--repeats 3] [--torch-threads 1] [--device auto] [--model DIR]

Previews are sent every ``preview_every`` steps (5 by default on SVD-XT), so their share of a whole generation is
this ratio divided by that.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from animator import generation, tiny
from animator.backend import Step
from animator.families.svd import SvdBackend
from animator.limits import EngineLimits
from animator.params import AnimateInput, GenerationParams, resolve
from animator.preview import LatentProjection
from bench import output
from bench.animate_bench import add_model_options, conditioning_image
from imagewire_serving.device import choose_dtype, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser, repeats=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per run")
    output.add_out(parser)
    return parser.parse_args(argv)


class Timeline:
    """Step-end timestamps of one run and the time spent in previews."""

    def __init__(self, backend: SvdBackend, params: GenerationParams, previews: bool) -> None:
        self._backend, self._params, self._previews = backend, params, previews
        self.ends: list[float] = []
        self.previews: list[float] = []
        self.preview_bytes = 0

    def __call__(self, step: Step) -> None:
        _synchronize(self._backend.device)  # the step's queued device work belongs to the step, not the preview
        if self._previews and step.denoised is not None:
            started = time.perf_counter()
            preview = generation.make_preview(self._backend, step, self._params)
            self.previews.append(time.perf_counter() - started)
            self.preview_bytes = len(preview.image)
        self.ends.append(time.perf_counter())

    def steps(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.ends[1:], self.ends[2:])]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backend: SvdBackend, params: GenerationParams, repeats: int) -> dict[str, Any]:
    image = conditioning_image(params.width, params.height)
    plain: list[float] = []
    with_previews: list[float] = []
    previews: list[float] = []
    size = 0
    for run in range(2 * repeats):
        timeline = Timeline(backend, params, previews=(run % 2 == 1) ^ (run % 4 >= 2))  # ABBA order
        backend.denoise(image, params, timeline)
        (with_previews if timeline.previews else plain).extend(timeline.steps())
        previews.extend(timeline.previews)
        size = max(size, timeline.preview_bytes)
    step_s, with_s, preview_s = (statistics.median(v) for v in (plain, with_previews, previews))
    return {
        "step_s": round(step_s, 4), "step_with_preview_s": round(with_s, 4), "preview_s": round(preview_s, 5),
        "ratio_preview_over_step": round(preview_s / step_s, 4),
        "ratio_step_with_over_without": round(with_s / step_s, 4),
        "target_ratio_preview_over_step": 0.05, "met": preview_s / step_s < 0.05,
        "preview_bytes": size, "steps_measured": {"without": len(plain), "with": len(with_previews)},
    }


def main() -> None:
    args = parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = args.model or str(tiny.ensure_model(args.preset))
    device = resolve_device(args.device)
    dtype = choose_dtype("auto", device).candidates[0]  # float16 on CUDA, float32 on the CPU
    backend = SvdBackend.load(model, device, dtype)
    assert isinstance(backend, SvdBackend)
    fitted = time.perf_counter()
    LatentProjection.fit(backend.latent_codec(backend.pipeline), device, dtype)  # what loading paid
    fit_s = time.perf_counter() - fitted
    spec = resolve(AnimateInput(image=b"bench", num_inference_steps=args.steps, seed=7), model, backend.accepts,
                   EngineLimits(max_num_inference_steps=1000))
    params = spec.params
    backend.denoise(conditioning_image(params.width, params.height), replace(params, num_inference_steps=1),
                    lambda step: None)  # warm-up
    report = {"benchmark": "preview", "model": model, "device": str(device), "dtype": str(dtype),
              "torch_threads": torch.get_num_threads(), "width": params.width, "height": params.height,
              "num_frames": params.num_frames, "steps": params.num_inference_steps, "repeats": args.repeats,
              "projection_fit_s": round(fit_s, 3),
              "projection_fit_r2": round(backend.projection.fit_r2, 3), **measure(backend, params, args.repeats)}
    output.emit(report, args.out)


if __name__ == "__main__":
    main()
