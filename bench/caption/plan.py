"""How much the caption benchmark measures: a full run, a ``--quick`` one, and the flags that adjust either."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    """How much to measure; --quick shrinks every count."""

    single_runs: int
    batch_runs: int
    c1_rounds: int
    duration_s: float
    concurrency: tuple[int, ...]
    # Each level also lasts at least this many in-process batch times: a closed loop must see several batches
    # whatever the machine's speed, or one slow batch decides the figure.
    min_batches: float
    limit_again: bool


FULL = Plan(single_runs=7, batch_runs=2, c1_rounds=10, duration_s=15.0, concurrency=(1, 4, 16, 64), min_batches=3,
            limit_again=True)
QUICK = Plan(single_runs=3, batch_runs=1, c1_rounds=4, duration_s=5.0, concurrency=(1, 4, 16), min_batches=0,
             limit_again=False)


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan for the command line: ``--quick`` picks the base, ``--duration`` and ``--concurrency`` adjust it."""
    plan = QUICK if args.quick else FULL
    if args.duration is not None:
        plan = replace(plan, duration_s=args.duration, min_batches=0)
    if args.concurrency:
        # c=1 is always measured: the latency ratio and the interleaved in-process calls come from it.
        plan = replace(plan, concurrency=tuple(sorted({int(v) for v in args.concurrency.split(",")} | {1})))
    return plan
