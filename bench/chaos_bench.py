"""Chaos benchmark: the fleet soak of issue 20, as a command that prints the tally.

    python -m bench.chaos_bench [--duration 600] [--kill-every 8 15] [--caption-threads 3] [--video-threads 2]
                                [--seeds 1,2,3,4,5,6,7,8] [--quick] [--out FILE]

Two captioners and two animators (``tiny`` presets, ``--dtype float32``, one thread each) behind the real Envoy
front door (``deploy/envoy/envoy.template.yaml``); threads captioning and threads downloading videos
(``animate_to_file`` with job ids, seeds from a fixed set) through the Python client; every ``--kill-every``
seconds a replica (the services in turn, a random one of the service, never the last one serving) is SIGKILLed and
restarted on its port. Before the chaos, each seed's video is made once on an undisturbed replica; a video counts
as ``differing`` when its verified bytes are not those. The figures: captions ok/failed, videos
ok/failed/differing (and how many were resumed or started over), the kills, each service's provenance keys (one
each: every replica computes alike), and each process's RSS sampled over its life (first, last, largest), Envoy's
included. Targets: 0 failed, 0 differing, RSS flat after warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import output
from bench.caption.stats import load_average
from bench.chaos import VIDEO, Chaos, reference_videos, rss_summary
from bench.replicas import ANIMATOR, Fleet, solid_png
from imagewire_serving.provenance import cpu_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=None, help="seconds of chaos (default 600, --quick 60)")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(8.0, 15.0), metavar=("MIN", "MAX"),
                        help="seconds between kills, drawn uniformly (default 8 15)")
    parser.add_argument("--caption-threads", type=int, default=3)
    parser.add_argument("--video-threads", type=int, default=2)
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,8", help="the videos' seeds, comma-separated")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--random-seed", type=int, default=20, help="the kills' and seeds' random sequence")
    parser.add_argument("--quick", action="store_true", help="60 s of chaos")
    output.add_out(parser)
    args = parser.parse_args(argv)
    args.duration = args.duration or (60.0 if args.quick else 600.0)
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from animator import tiny as animator_models
    from captioner import tiny as caption_models

    animator_models.ensure_model("tiny")  # built once here, not inside each replica's start-up
    caption_model = str(caption_models.ensure_model("tiny"))
    image = solid_png()
    started = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "load_average_start": load_average()},
        "setup": {"duration_s": args.duration, "kill_every_s": list(args.kill_every),
                  "caption_threads": args.caption_threads, "video_threads": args.video_threads,
                  "seeds": args.seeds, "video": VIDEO, "replicas": {"captioner": 2, "animator": 2}},
    }
    with tempfile.TemporaryDirectory(prefix="imagewire-chaos-") as workdir, \
            Fleet(caption_model=caption_model, captioners=2, animators=2, python=sys.executable,
                  health_interval_s=0.5) as fleet:
        out["fleet_start_s"] = round(time.perf_counter() - started, 1)
        references = reference_videos(fleet.of(ANIMATOR)[0].address, image, args.seeds, Path(workdir))
        chaos = Chaos(fleet, image=image, seeds=args.seeds, references=references, workdir=Path(workdir),
                      caption_threads=args.caption_threads, video_threads=args.video_threads,
                      kill_every_s=(args.kill_every[0], args.kill_every[1]), rss_every_s=args.rss_every,
                      rng=random.Random(args.random_seed))
        tally = chaos.run(args.duration)
        out.update(tally.figures())
        out["kill_times"] = tally.kills
        out["rss"] = rss_summary(tally.rss)
    out["machine"]["load_average_end"] = load_average()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return output.emit(run(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
