"""Memory of retained video jobs: the job table under a --retention-bytes budget against one that keeps every job,
side by side in one run (each in its own process, so that one's allocations do not hide the other's).

The videos here are SVD-XT-sized (``--video-mib``, 4 MiB by default: 1024x576, 25 frames) and their bytes are
random, written into real :class:`~animator.jobs.Job`\\ s of a real :class:`~animator.job_table.JobTable` in the
chunks a generation posts (1 MiB), without running a model: a model's own allocations (hundreds of MiB that come
and go) would drown the figure being measured. The tests measure the same bound with real generations
(``tests/test_animator_retention.py``). Each process notes its resident set size (RSS) before the first job and
every ten jobs, with the bytes the table holds and the jobs it keeps; the command prints one JSON object with both
runs and the ratio of their RSS growth.

    python -m bench.jobs_memory_bench [--jobs 50] [--video-mib 4] [--budget-mib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
from typing import Any

from animator.events import Chunk, Result, Usage
from animator.job_table import JobTable
from animator.jobs import Job, JobHooks
from animator.limits import CHUNK_BYTES, EngineLimits
from animator.params import AnimateInput, ModelFields, resolve
from bench import output
from imagewire_serving.metrics import Metrics
from imagewire_serving.provenance import Provenance

# "Keeps them all": far more than any run here produces.
UNBOUNDED_BYTES = 64 * 2**30
# SVD-XT's request defaults: the jobs here hold bytes, no model.
PROVENANCE = Provenance("0" * 16, "", "", "float32", "cpu", (), False, 1, ())
MODEL = ModelFields("svd", {"width": 1024, "height": 576, "num_frames": 25, "fps": 6, "num_inference_steps": 25,
                            "decode_chunk_size": 8, "preview_every": 5})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--video-mib", type=int, default=4, help="each job's video, in MiB")
    parser.add_argument("--budget-mib", type=int, default=64, help="the bounded run's --retention-bytes, in MiB")
    output.add_out(parser)
    parser.add_argument("--child-budget", type=int, help=argparse.SUPPRESS)  # one measured process
    return parser.parse_args(argv)


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def one_job(table: JobTable, number: int, video_mib: int) -> None:
    """A job as a generation fills it: its chunks posted in order, then its result, then finished."""
    limits = EngineLimits()
    spec = resolve(AnimateInput(image=b"image", seed=number), "model", MODEL, limits)
    hooks = JobHooks(grew=table.grew, finished=table.finished, abandoned=lambda job, error: None)
    # No model or image: the bench measures the job's bytes, which never reach either.
    job = Job(f"job-{number}", spec, backend=None, image=None, hooks=hooks,  # type: ignore[arg-type]
              provenance=PROVENANCE)
    table.add(job)
    job.start()
    for index in range(video_mib * 2**20 // CHUNK_BYTES):
        job.append(Chunk(os.urandom(CHUNK_BYTES), index * CHUNK_BYTES))
    job.append(Result(job.available_bytes, b"", number, False, False, Usage(0, 0.0, 0.0), PROVENANCE))
    job.finish(None)


async def run(args: argparse.Namespace, budget: int) -> dict[str, Any]:
    table = JobTable(EngineLimits(retention_bytes=budget), Metrics())
    start = rss_mib()
    samples = []
    for number in range(1, args.jobs + 1):
        one_job(table, number, args.video_mib)
        if number % 10 == 0 or number == args.jobs:
            samples.append({"jobs": number, "rss_growth_mib": round(rss_mib() - start, 1),
                            "retained_mib": round(table.retained_bytes / 2**20, 1), "jobs_kept": len(table)})
    return {"budget_mib": round(budget / 2**20, 1), "rss_start_mib": round(start, 1), "samples": samples}


def child(args: argparse.Namespace, budget: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.jobs_memory_bench", "--jobs", str(args.jobs), "--video-mib",
               str(args.video_mib), "--child-budget", str(budget)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def main() -> None:
    args = parse_args()
    if args.child_budget is not None:
        print(json.dumps(asyncio.run(run(args, args.child_budget))))
        return
    bounded = child(args, args.budget_mib * 2**20)
    unbounded = child(args, UNBOUNDED_BYTES)
    growth = [result["samples"][-1]["rss_growth_mib"] for result in (bounded, unbounded)]
    output.emit({"benchmark": "jobs_memory", "jobs": args.jobs, "video_mib": args.video_mib,
                 "bounded": bounded, "unbounded": unbounded,
                 "ratio_rss_growth_bounded_over_unbounded": round(growth[0] / growth[1], 3)}, args.out)


if __name__ == "__main__":
    main()
