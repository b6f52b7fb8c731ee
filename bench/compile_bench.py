"""Compiled against eager, side by side in one run: the caption model's vision encoder and whole captions per dtype,
the video model's denoising step and VAE decode, and the start-up of a server with a cold and a warm compile cache.

    python -m bench.compile_bench [--model-preset large] [--dtypes float32,bfloat16] [--batch-size 8]
                                  [--video-preset bench] [--skip-video] [--skip-restart] [--restarts 3]
                                  [--repeats 5] [--out F]

- ``caption``: per dtype, the captioner's vision encoder (``imagewire_serving.compiling``: on the CPU AOTInductor
  packages with frozen weights, on CUDA torch.compile) eager and compiled, for one image and a batch, measured
  alternately; then whole greedy captions (``--max-new-tokens``) with the encoder eager and compiled; then
  (``decoder_batch_N``) whole captions with the encoder eager and the text decoder eager (its dynamic KV cache, as
  served eagerly) or compiled (its one-token steps over a static KV cache). ``first_compiled_call_s`` is the first
  compiled call (tracing and code generation). The models are ``captioner.tiny`` presets built from configs
  (``large``: BLIP-large's architecture, ViT-L/16 at 384 px and a BERT-base decoder, random weights).
- ``video``: the ``animator.tiny`` preset's denoiser per step and VAE decode per video, eager and compiled, in
  float32, at its default size.
- ``restart``: the real ``imagewire-captioner`` (``--dtype`` the first of ``--dtypes``) started with ``--compile
  on`` and an empty compile cache, then ``--restarts`` times each, alternately, with ``--compile off`` and with
  ``--compile on`` over that cache (warm): seconds to ready (medians and every start), and the warm restart over
  the eager start-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import output

SERVER_START_TIMEOUT_S = 1800.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compile_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-preset", default="small", help="captioner.tiny preset (small, bench, large)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated dtypes to compare")
    parser.add_argument("--batch-size", type=int, default=8, help="the batch measured beside one image")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="caption length of the whole-caption runs")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs per figure (medians)")
    parser.add_argument("--video-preset", default="bench", help="animator.tiny preset for the video figures")
    parser.add_argument("--skip-video", action="store_true", help="no video figures")
    parser.add_argument("--skip-restart", action="store_true", help="no server start-up figures")
    parser.add_argument("--restarts", type=int, default=3, help="eager and warm starts each, alternated (medians)")
    output.add_out(parser)
    return parser.parse_args(argv)


def alternate(first: Callable[[], Any], second: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median seconds of each, run alternately (a change in the machine's load hits both alike)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, run in enumerate((first, second)):
            started = time.perf_counter()
            run()
            times[index].append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def eager_against_compiled(part: Any, run: Callable[[], Any], repeats: int) -> dict[str, float]:
    """``run`` with ``part`` eager and compiled, alternately: the medians and the speed-up."""
    def with_part(compiled: bool) -> Callable[[], Any]:
        def switched() -> Any:
            part.use(compiled=compiled)
            return run()
        return switched

    eager_s, compiled_s = alternate(with_part(False), with_part(True), repeats)
    return {"eager_s": round(eager_s, 4), "compiled_s": round(compiled_s, 4),
            "speed_up": round(eager_s / compiled_s, 2)}


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def caption_figures(model_dir: Path, dtype_name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from PIL import Image

    from captioner.backend import GenerationOptions
    from captioner.families import load_captioner
    from captioner.families.base import DECODER_PART
    from imagewire_serving.device import DTYPES

    backend = load_captioner(str(model_dir), torch.device("cpu"), DTYPES[dtype_name])
    parts = {part.name: part for part in backend.compile_parts()}
    part, decoder = parts["vision encoder"], parts.get(DECODER_PART)
    side = int(backend.model.config.vision_config.image_size)
    image = Image.new("RGB", (side, side), (127, 90, 60))
    blank = backend.pixels([image])  # the processor's own normalisation, one image
    options = GenerationOptions(max_new_tokens=args.max_new_tokens, num_beams=1)
    figures: dict[str, Any] = {}
    with torch.inference_mode():
        for size in (1, args.batch_size):
            pixels = blank.repeat(size, 1, 1, 1).to(backend.dtype)

            def encode(pixels: torch.Tensor = pixels) -> None:
                part.module(pixel_values=pixels)

            part.use(compiled=False)
            encode()  # eager warm-up
            part.compile(torch.device("cpu"))
            first = timed(encode)
            figures[f"encoder_batch_{size}"] = {**eager_against_compiled(part, encode, args.repeats),
                                                "first_compiled_call_s": round(first, 1)}
        for size in (1, args.batch_size):
            images = [image] * size

            def caption(images: list[Any] = images) -> None:
                backend.generate(images, [""] * len(images), options)

            for compiled in (False, True):  # warm both
                part.use(compiled=compiled)
                caption()
            figures[f"caption_batch_{size}"] = eager_against_compiled(part, caption, max(3, args.repeats // 2))
        if decoder is not None:  # whole captions again, the encoder eager and the decoder eager or compiled
            part.use(compiled=False)
            decoder.compile(torch.device("cpu"))
            for size in (1, args.batch_size):
                images = [image] * size

                def caption_again(images: list[Any] = images) -> None:
                    backend.generate(images, [""] * len(images), options)

                decoder.use(compiled=False)
                caption_again()
                decoder.use(compiled=True)
                first = timed(caption_again)
                figures[f"decoder_batch_{size}"] = {
                    **eager_against_compiled(decoder, caption_again, max(3, args.repeats // 2)),
                    "first_compiled_call_s": round(first, 1)}
    return figures


def video_figures(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from animator import families, tiny
    from animator.engine import warm_up_image
    from animator.limits import EngineLimits
    from animator.params import warm_up_params
    from imagewire_serving.compiling import PartClock

    device = torch.device("cpu")
    backend = families.load(args.video_preset, str(tiny.ensure_model(args.video_preset)), device, torch.float32)
    params = warm_up_params(backend.accepts, EngineLimits(), default_shape=True)
    parts = backend.compile_parts()

    def run() -> dict[str, float]:
        clock = PartClock(parts, device)
        with clock.attached():
            latents = backend.denoise(warm_up_image(), params, lambda step: None)
            for _ in backend.decode(latents, params):
                pass
        return dict(clock.seconds)

    with torch.inference_mode():
        run()
        eager = [run() for _ in range(args.repeats)]
        for part in parts:
            part.compile(device)
        first = timed(run)
        compiled = [run() for _ in range(args.repeats)]
    steps = params.num_inference_steps
    figures: dict[str, Any] = {"preset": args.video_preset, "steps": steps, "frames": params.num_frames,
                               "size": [params.width, params.height], "first_compiled_run_s": round(first, 1)}
    for part in parts:
        per = steps if part.name == "denoiser" else 1
        eager_s = statistics.median(run[part.name] for run in eager) / per
        compiled_s = statistics.median(run[part.name] for run in compiled) / per
        figures[part.name.replace(" ", "_")] = {
            "per": "step" if part.name == "denoiser" else "video", "eager_s": round(eager_s, 4),
            "compiled_s": round(compiled_s, 4), "speed_up": round(eager_s / compiled_s, 2)}
    return figures


def restart_figures(model_dir: Path, dtype_name: str, restarts: int) -> dict[str, Any]:
    from imagewire_serving.launcher import ServerProcess

    def start(*flags: str) -> float:
        command = [sys.executable, "-m", "captioner", "--model", str(model_dir), "--device", "cpu",
                   "--dtype", dtype_name, *flags]
        started = time.perf_counter()
        with ServerProcess.start(command, name="imagewire-captioner", start_timeout_s=SERVER_START_TIMEOUT_S) as server:
            server.wait_ready()
            return time.perf_counter() - started

    eager: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory() as cache:
        cold = start("--compile", "on", "--compile-cache", cache)
        for _ in range(restarts):  # alternated, so that a change in the machine's load hits both alike
            eager.append(start("--compile", "off"))
            warm.append(start("--compile", "on", "--compile-cache", cache))
    return {"dtype": dtype_name, "eager_start_s": round(statistics.median(eager), 2),
            "compiled_cold_start_s": round(cold, 1), "compiled_warm_start_s": round(statistics.median(warm), 2),
            "warm_over_eager": round(statistics.median(warm) / statistics.median(eager), 2),
            "eager_starts_s": [round(seconds, 2) for seconds in eager],
            "warm_starts_s": [round(seconds, 2) for seconds in warm]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from imagewire_serving.threads import prepare_openmp

    prepare_openmp()  # the servers' OpenMP wait policy, set before torch loads
    import torch

    from captioner import tiny
    from imagewire_serving.compiling import configure
    from imagewire_serving.provenance import device_kind
    from imagewire_serving.threads import apply_threads

    threads = apply_threads(None)
    model_dir = tiny.ensure_model(args.model_preset)
    dtypes = [name for name in args.dtypes.split(",") if name]
    result: dict[str, Any] = {"hardware": device_kind(torch.device("cpu")), "threads": str(threads),
                              "torch": torch.__version__, "model_preset": args.model_preset,
                              "batch_size": args.batch_size, "caption": {}}
    with tempfile.TemporaryDirectory() as cache:
        configure(Path(cache), torch.device("cpu"))
        for dtype_name in dtypes:
            result["caption"][dtype_name] = caption_figures(model_dir, dtype_name, args)
            torch._dynamo.reset()
        if not args.skip_video:
            result["video"] = video_figures(args)
    if not args.skip_restart:
        result["restart"] = restart_figures(model_dir, dtypes[0], args.restarts)
    return output.emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
