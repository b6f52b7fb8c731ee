"""Every benchmark in one command, each in its own process, with a summary of the figures that have targets.

    python -m bench [--out-dir bench-results] [--quick] [--device cpu|cuda:0] [--only caption,accuracy,...]

Runs ``bench.caption_bench`` (float32 and the dtype --dtype auto picks: in-process limits, served latency and
throughput, the FastAPI baseline), ``bench.compile_bench`` (compiled against eager per dtype: the vision encoder
and whole captions of the BLIP-large architecture, a video step and decode, restarts with a warm compile cache),
``bench.starts_bench`` (the dtype each of 20 fresh starts of either server chooses beside a busy loop),
``bench.dtype_accuracy`` (the shapes captioner's held-out accuracy per dtype),
``bench.animate_bench`` (streaming against the plain pipeline, and the frames' PSNR in bfloat16 against float32),
``bench.thread_bench`` (OpenMP wait policies alone and with the CPUs shared), ``bench.preview_bench`` (what a
preview costs a denoising step), ``bench.segments_bench`` (frame interpolation's cost per frame against a
denoising step, and a 3-segment job's first byte against a 1-segment one's), ``bench.decode_bench`` (chunked
decoding per video family) and ``bench.jobs_memory_bench`` (retained jobs' memory under the budget),
``bench.fleet_bench`` (Envoy's cost against direct calls, and the calls lost when a replica dies) and
``bench.chaos_bench`` (both services' replicas killed at random under mixed load: captions and videos lost or
differing). Each writes its JSON to ``--out-dir``; the summary printed last (and written as ``summary.json``) puts
the targeted figures side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHES = ("caption", "compile", "starts", "accuracy", "animate", "threads", "previews", "segments", "decode",
           "jobs_memory", "fleet", "chaos")


def commands(args: argparse.Namespace, out: Path) -> dict[str, list[str]]:
    """The command line of each benchmark, writing its JSON into ``out``."""
    python = [sys.executable, "-m"]
    caption = [*python, "bench.caption_bench", "--device", args.device, "--out", str(out / "caption.json")]
    animate = [*python, "bench.animate_bench", "--out", str(out / "animate.json")]
    threads = [*python, "bench.thread_bench", "--out", str(out / "threads.json")]
    if args.quick:
        caption.append("--quick")
        animate += ["--repeats", "1"]
        threads += ["--rounds", "5"]
    return {
        "caption": caption,
        "accuracy": [*python, "bench.dtype_accuracy", "--out", str(out / "accuracy.json")],
        "animate": animate,
        "threads": threads,
        "previews": [*python, "bench.preview_bench", "--device", args.device, "--repeats", "1" if args.quick else "3",
                     "--out", str(out / "previews.json")],
        "segments": [*python, "bench.segments_bench", "--repeats", "2" if args.quick else "4",
                     "--out", str(out / "segments.json")],
        "decode": [*python, "bench.decode_bench", "--out", str(out / "decode.json")],
        "jobs_memory": [*python, "bench.jobs_memory_bench", "--out", str(out / "jobs_memory.json")],
        "fleet": [*python, "bench.fleet_bench", *(["--quick"] if args.quick else []), "--out", str(out / "fleet.json")],
        "compile": [*python, "bench.compile_bench", "--model-preset", "small" if args.quick else "large",
                    "--repeats", "2" if args.quick else "5", "--out", str(out / "compile.json")],
        "starts": [*python, "bench.starts_bench", "--starts", "5" if args.quick else "20",
                   "--out", str(out / "starts.json")],
        "chaos": [*python, "bench.chaos_bench", *(["--quick"] if args.quick else []), "--out", str(out / "chaos.json")],
    }


def summary(out: Path) -> dict[str, Any]:
    """The figures with targets, from whichever benchmarks ran."""
    found: dict[str, Any] = {}
    if (out / "caption.json").is_file():
        caption = json.loads((out / "caption.json").read_text())
        keys = ("single_latency_p50_s", "batch_throughput_rps", "batching_gain")
        limits = {dtype: {key: figures[key] for key in keys} for dtype, figures in caption["limit"].items()}
        found["caption"] = {"limit": limits, **caption["comparison"]}
    if (out / "accuracy.json").is_file():
        accuracy = json.loads((out / "accuracy.json").read_text())
        found["accuracy"] = {"auto": accuracy["auto"], "points_vs_float32": accuracy["points_vs_float32"]}
    if (out / "animate.json").is_file():
        animate = json.loads((out / "animate.json").read_text())
        found["animate"] = {key: animate.get(key) for key in (
            "dtype", "ratio_total_over_plain", "ratio_first_byte_over_plain", "dtype_comparison")}
    if (out / "segments.json").is_file():
        segments = json.loads((out / "segments.json").read_text())
        found["segments"] = {
            "ratio_first_byte": segments["first_byte"]["ratio_first_byte"],
            **{f"interpolation_{name}_per_frame_over_step": figures["ratio_per_frame_over_step"]
               for name, figures in segments["interpolation"].items() if name.startswith("factor_")}}
    if (out / "threads.json").is_file():
        threads = json.loads((out / "threads.json").read_text())
        found["threads"] = {key: value for key, value in threads.items() if key.endswith("_vs_passive")} | {
            "idle_cpu_share": threads["idle_cpu_share"]}
    if (out / "compile.json").is_file():
        compiled = json.loads((out / "compile.json").read_text())
        found["compile"] = {"hardware": compiled["hardware"], "restart": compiled.get("restart"), **{
            dtype: {name: figures["speed_up"] for name, figures in parts.items()}
            for dtype, parts in compiled["caption"].items()}}
    if (out / "starts.json").is_file():
        starts = json.loads((out / "starts.json").read_text())
        found["starts"] = {service: starts[service]["dtypes"] for service in ("captioner", "animator")
                           if service in starts}
    if (out / "chaos.json").is_file():
        chaos = json.loads((out / "chaos.json").read_text())
        found["chaos"] = {key: chaos[key] for key in ("captions", "videos", "kills")}
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("bench-results"), help="where the JSON files go")
    parser.add_argument("--quick", action="store_true", help="smoke runs: fewer samples everywhere")
    parser.add_argument("--device", default="cpu", help="the caption benchmark's device (cpu, cuda:0)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {', '.join(BENCHES)}")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    failed = []
    for name, command in commands(args, args.out_dir).items():
        if name in chosen:
            print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
            if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
                failed.append(name)
    text = json.dumps(summary(args.out_dir), indent=2)
    (args.out_dir / "summary.json").write_text(text + "\n")
    print(text)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
