"""OpenMP wait policies side by side: a captioner's latency alone and with the CPUs shared, and its idle CPU use.

    python -m bench.thread_bench [--model-preset small] [--rounds 20] [--policies passive,default,spin3k]

One ``imagewire-captioner`` per policy runs at once (each with the servers' default thread count, the CPUs the
process may use). Rounds alternate between two conditions: *alone* (nothing else started) and *shared* (busy
processes hold ``--competitors`` CPUs, default half of them, as other services or jobs on the same host would).
In every round each server captions one image in turn (rotating the order). Each request also records how much
CPU time the rest of the machine took meanwhile (``/proc/stat`` less the server's and this process's own), so a
noisy machine shows in the figures rather than hiding in them. Last, each server's CPU use while idle.

Policies: ``passive`` (OMP_WAIT_POLICY=PASSIVE: waiting threads sleep at once; the servers' default),
``default`` (GNU OpenMP's own: spin ~300,000 iterations, then sleep), ``spinN`` (GOMP_SPINCOUNT=N), ``active``
(spin without end: idle servers burn a CPU each; left out unless asked for).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import output
from bench.caption.images import ImagePool
from imagewire_serving.launcher import ServerProcess
from imagewire_serving.threads import WAIT_VARIABLES, usable_cpus

TICKS = os.sysconf("SC_CLK_TCK")  # /proc counts CPU time in these


def policy_env(name: str) -> dict[str, str | None]:
    """The environment of one policy; every other wait variable removed."""
    env: dict[str, str | None] = dict.fromkeys(WAIT_VARIABLES)
    if name in ("passive", "active"):
        env["OMP_WAIT_POLICY"] = name.upper()
    elif name == "default":
        env["GOMP_SPINCOUNT"] = "300000"  # what GNU OpenMP does when neither variable is set
    elif name.startswith("spin"):
        env["GOMP_SPINCOUNT"] = str(int(name.removeprefix("spin").replace("k", "000")))
    else:
        raise ValueError(f"unknown policy {name!r}")
    return env


def busy_seconds() -> float:
    """CPU seconds every process together has used on this machine (all CPUs), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / TICKS  # all but idle and iowait


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of one process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def others_share(pids: tuple[int, ...], since: tuple[float, float, float]) -> float:
    """CPUs the rest of the machine used since ``since`` (a :func:`snapshot` of ``pids``) on average."""
    now = snapshot(pids)
    return max(0.0, (now[1] - since[1]) - (now[2] - since[2])) / (now[0] - since[0])


def snapshot(pids: tuple[int, ...]) -> tuple[float, float, float]:
    """(now, the machine's busy CPU seconds, those of ``pids``)."""
    return time.perf_counter(), busy_seconds(), sum(cpu_seconds(pid) for pid in pids)


@contextlib.contextmanager
def competitors(count: int) -> Iterator[None]:
    """``count`` processes that keep one CPU each busy, for the block."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


async def one_round(clients: dict[str, Any], servers: dict[str, ServerProcess], pool: ImagePool, order: list[str],
                    rows: dict[str, list[tuple[float, float]]]) -> None:
    """One request to each server in ``order``: (latency, CPUs the rest of the machine used meanwhile)."""
    for name in order:
        image, pids = pool.take(), (os.getpid(), servers[name].process.pid)
        before = snapshot(pids)
        await clients[name].caption(image, max_new_tokens=20)
        rows[name].append((time.perf_counter() - before[0], others_share(pids, before)))


async def measure(args: argparse.Namespace, servers: dict[str, ServerProcess]) -> dict[str, Any]:
    from imagewire.client import AsyncCaptionClient

    pool = ImagePool(64, 224)
    clients = {name: AsyncCaptionClient(server.target, timeout=600) for name, server in servers.items()}
    rows: dict[str, dict[str, list[tuple[float, float]]]] = {c: {n: [] for n in servers} for c in ("alone", "shared")}
    try:
        for client in clients.values():
            await client.caption(pool.take(), max_new_tokens=20)
        names = list(servers)
        for index in range(args.rounds):
            order = names[index % len(names):] + names[: index % len(names)]
            await one_round(clients, servers, pool, order, rows["alone"])
            with competitors(args.competitors):
                await one_round(clients, servers, pool, order, rows["shared"])
    finally:
        for client in clients.values():
            await client.close()
    await asyncio.sleep(1.0)  # let the last answers' writes finish before sampling idleness
    idle = {name: cpu_seconds(server.process.pid) for name, server in servers.items()}
    await asyncio.sleep(args.idle_s)
    return {
        condition: {name: {"p50_s": round(statistics.median(lat for lat, _ in got), 4),
                           "others_cpus_p50": round(statistics.median(o for _, o in got), 2)}
                    for name, got in by_server.items()}
        for condition, by_server in rows.items()
    } | {"idle_cpu_share": {name: round((cpu_seconds(s.process.pid) - idle[name]) / args.idle_s, 4)
                            for name, s in servers.items()}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.thread_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-preset", default="small", help="captioner.tiny preset to serve")
    parser.add_argument("--model", help="a model directory instead of a preset")
    parser.add_argument("--policies", default="passive,default,spin3k", help="comma-separated policies")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per condition")
    parser.add_argument("--competitors", type=int, default=max(1, usable_cpus() // 2),
                        help="CPUs kept busy in the shared rounds")
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds over which idle CPU use is sampled")
    output.add_out(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from captioner import tiny

    model = args.model or str(tiny.ensure_model(args.model_preset))
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(ServerProcess.start(
            [sys.executable, "-m", "captioner", "--model", model, "--device", "cpu"], name="imagewire-captioner",
            env=policy_env(name), start_timeout_s=900)) for name in policies}
        for server in servers.values():
            server.wait_ready()
        out: dict[str, Any] = {"model": model, "usable_cpus": usable_cpus(), "competitors": args.competitors,
                               "rounds": args.rounds, **asyncio.run(measure(args, servers))}
    base = policies[0]
    for condition in ("alone", "shared"):
        figures = out[condition]
        out[f"{condition}_p50_vs_{base}"] = {name: round(figures[name]["p50_s"] / figures[base]["p50_s"], 3)
                                            for name in policies}
    return output.emit(out, args.out)


if __name__ == "__main__":
    sys.exit(main())
