"""Streaming overhead of the animate service: one request through the real gRPC server vs the plain pipeline.

For a benchmark-size SVD (``animator.tiny`` preset ``bench``, built on first use, or ``--model``), this measures
in one process and one run, alternating the two (and which goes first) so both see the same machine load:

- served: an ``AnimateClient`` call to an in-process ``imagewire-animator`` server on 127.0.0.1 (port 0), writing
  the streamed video to a file: the time to the first video byte and the total time;
- plain: ``StableVideoDiffusionPipeline(...)`` on the same loaded pipeline with the same arguments, then
  ``diffusers.utils.export_to_video`` (imageio + ffmpeg) to a file.

It prints one JSON object with the medians and the ratios total/plain (target <= 1.05) and first byte/plain.
The server runs in ``--dtype`` (default auto; the plain pipeline shares its loaded pipeline). With
``--psnr-dtype`` (default bfloat16), it also generates the same video (same seed and parameters, through the
backend the server uses) in float32 and in that dtype and reports the frames' PSNR.

    python -m bench.animate_bench [--repeats 4] [--torch-threads 1] [--dtype auto] [--psnr-dtype bfloat16] ...

``--torch-threads`` sets torch's intra-op threads (0 keeps torch's default); on a CPU shared with other jobs, one
thread gives steadier and often faster figures than spinning OpenMP threads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils.export_utils import export_to_video
from imagewire.client import AnimateClient, VideoChunk
from PIL import Image

from animator import tiny
from animator.app import AnimatorApp
from animator.limits import EngineLimits
from animator.quality import psnr
from animator.settings import AnimatorSettings
from bench import output
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings

_LOGGER = logging.getLogger(__name__)


class BackgroundServer:
    """A real animator GrpcServer on its own event loop thread, so the blocking client can call it."""

    def __init__(self, settings: AnimatorSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.app = AnimatorApp(settings, self.metrics)
        self.server = GrpcServer(settings.server, self.app, metrics=self.metrics)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-server", daemon=True)

    def start(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        asyncio.run_coroutine_threadsafe(self.server.load(), self._loop).result()
        return self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def conditioning_image(width: int, height: int) -> Image.Image:
    """A smooth colour gradient: the same picture for both paths."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                    np.broadcast_to((x + y) / 2, (height, width))], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


def run_plain(pipeline: Any, image: Image.Image, params: dict[str, int], out: Path) -> float:
    """The pipeline, then ``export_to_video``; returns the seconds both took."""
    started = time.perf_counter()
    frames = pipeline(
        image, width=params["width"], height=params["height"], num_frames=params["num_frames"],
        num_inference_steps=params["num_inference_steps"], decode_chunk_size=params["decode_chunk_size"],
        # The server conditions the UNet on exactly `fps` (the pipeline subtracts one): the same call here.
        fps=params["fps"] + 1, generator=torch.Generator().manual_seed(params["seed"]),
    ).frames[0]
    export_to_video(frames, str(out), fps=params["fps"])
    return time.perf_counter() - started


def run_served(client: AnimateClient, image_png: bytes, params: dict[str, Any], out: Path) -> tuple[float, float, int]:
    """One streamed request to a file; returns the seconds to the first video byte, the total, the bytes."""
    started = time.perf_counter()
    first_byte: list[float] = []

    def on_event(event: object) -> None:
        if isinstance(event, VideoChunk) and not first_byte:
            first_byte.append(time.perf_counter() - started)

    result = client.animate_to_file(image_png, out, on_event=on_event, **params)
    return first_byte[0], time.perf_counter() - started, result.total_bytes


def add_model_options(parser: argparse.ArgumentParser, *, repeats: int) -> None:
    """The options of the video benches that run one SVD model: which one, how many runs, torch's threads."""
    parser.add_argument("--model", help="model directory or hub id (default: the bench preset, built if needed)")
    parser.add_argument("--preset", choices=sorted(tiny.PRESETS), default="bench")
    parser.add_argument("--repeats", type=int, default=repeats, help="runs of each kind, alternated")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads; 0 = torch's default")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser, repeats=4)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--num-frames", type=int)
    parser.add_argument("--num-inference-steps", type=int)
    parser.add_argument("--decode-chunk-size", type=int)
    parser.add_argument("--fps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="the server's --dtype")
    output.add_out(parser)
    parser.add_argument("--psnr-dtype", default="bfloat16",
                        help="compare this dtype's frames with float32's by PSNR ('' to skip)")
    return parser.parse_args(argv)


def request_params(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, int]:
    """The request both paths run: the flags where given, else the model's own defaults."""
    return {
        "width": args.width or defaults["width"],
        "height": args.height or defaults["height"],
        "num_frames": args.num_frames or defaults["num_frames"],
        "num_inference_steps": args.num_inference_steps or defaults["num_inference_steps"],
        "decode_chunk_size": args.decode_chunk_size or defaults["decode_chunk_size"],
        "fps": args.fps,
        "seed": args.seed,
    }


@dataclass
class Runs:
    """Seconds per repeat: the plain pipeline, the served first video byte, the served total."""

    plain: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    video_bytes: int = 0

    def add_served(self, measured: tuple[float, float, int]) -> None:
        """Record what :func:`run_served` returned."""
        first_s, total_s, self.video_bytes = measured
        self.first.append(first_s)
        self.total.append(total_s)


def measure(address: str, pipeline: Any, params: dict[str, int], repeats: int) -> Runs:
    """Both paths ``repeats`` times, alternating which goes first, after one untimed run of each."""
    image = conditioning_image(params["width"], params["height"])
    runs = Runs()
    with tempfile.TemporaryDirectory() as scratch, AnimateClient(address, timeout=3600) as client:
        png_path = Path(scratch) / "image.png"
        image.save(png_path)
        image_png = png_path.read_bytes()
        plain_out, served_out = Path(scratch) / "plain.mp4", Path(scratch) / "served.mp4"
        # One untimed run of each: lazy initialisation (allocator, encoder libraries, the channel).
        run_plain(pipeline, image, params, plain_out)
        run_served(client, image_png, params, served_out)
        for repeat in range(repeats):
            # Alternate which goes first (ABBA...): on a shared machine the first of a pair is often slower.
            if repeat % 2:
                runs.add_served(run_served(client, image_png, params, served_out))
                runs.plain.append(run_plain(pipeline, image, params, plain_out))
            else:
                runs.plain.append(run_plain(pipeline, image, params, plain_out))
                runs.add_served(run_served(client, image_png, params, served_out))
    return runs


def report(runs: Runs, header: dict[str, Any]) -> dict[str, Any]:
    """The JSON: the medians, the ratios to the plain pipeline, and every run."""
    plain_s, first_s, total_s = (statistics.median(v) for v in (runs.plain, runs.first, runs.total))
    return {
        **header,
        "video_bytes": runs.video_bytes,
        "plain_pipeline_export_s": round(plain_s, 3),
        "served_first_byte_s": round(first_s, 3),
        "served_total_s": round(total_s, 3),
        "ratio_total_over_plain": round(total_s / plain_s, 4),
        "ratio_total_over_plain_per_pair_median": round(
            statistics.median(t / p for t, p in zip(runs.total, runs.plain)), 4
        ),
        "ratio_first_byte_over_plain": round(first_s / plain_s, 4),
        "runs": {"plain_s": [round(v, 3) for v in runs.plain], "first_byte_s": [round(v, 3) for v in runs.first],
                 "total_s": [round(v, 3) for v in runs.total]},
    }


def frames_in(source: str, dtype: torch.dtype, params: dict[str, Any]) -> np.ndarray:
    """Every frame of one generation through the server's backend, loaded in ``dtype`` on the CPU."""
    from animator.families.svd import SvdBackend
    from animator.limits import EngineLimits
    from animator.params import AnimateInput, resolve

    backend = SvdBackend.load(source, torch.device("cpu"), dtype)
    limits = EngineLimits(max_num_frames=64, max_num_inference_steps=200)
    # The model's own fields at their defaults, exactly as the server resolves a request.
    full = resolve(AnimateInput(image=b"bench", **params), "bench", backend.accepts, limits).params
    image = conditioning_image(params["width"], params["height"])
    latents = backend.denoise(image, full, lambda step: None)
    return np.concatenate(list(backend.decode(latents, full)))


def compare_dtypes(source: str, name: str, params: dict[str, int]) -> dict[str, Any]:
    """The frames of float32 and of ``name`` for the same request, compared."""
    started = time.perf_counter()
    reference = frames_in(source, torch.float32, params)
    float32_s = time.perf_counter() - started
    started = time.perf_counter()
    other = frames_in(source, getattr(torch, name), params)
    other_s = time.perf_counter() - started
    return {"dtype": name, "psnr_db_vs_float32": round(psnr(reference, other), 2),
            "max_abs_difference": int(np.abs(reference.astype(int) - other.astype(int)).max()),
            "seconds": {"float32": round(float32_s, 2), name: round(other_s, 2)}}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    model = args.model or str(tiny.ensure_model(args.preset))
    settings = AnimatorSettings(server=ServerSettings(port=0, models=(model,), device="auto", dtype=args.dtype,
                                                      threads=args.torch_threads or None),
                                limits=EngineLimits(max_num_frames=64, max_num_inference_steps=200))
    server = BackgroundServer(settings)
    address = server.start()
    backend = server.app.engine().backends[0]
    params = request_params(args, backend.accepts.defaults)
    try:
        # The served model is an SVD family backend (this bench serves only that), which has a pipeline.
        runs = measure(address, backend.pipeline, params, args.repeats)  # type: ignore[attr-defined]
    finally:
        server.stop()
    header = {"benchmark": "animate", "model": model, "device": str(backend.device),
              "dtype": str(backend.dtype).removeprefix("torch."), "torch_threads": torch.get_num_threads(), **params,
              "repeats": args.repeats}
    out = report(runs, header)
    if args.psnr_dtype:
        out["dtype_comparison"] = compare_dtypes(model, args.psnr_dtype, params)
    output.emit(out, args.out)


if __name__ == "__main__":
    main()
