"""The same server started again and again, beside a busy loop: which dtype does each start choose?

    python -m bench.starts_bench [--starts 20] [--services captioner,animator] [--out F]

Each start is the real ``python -m captioner`` / ``python -m animator`` (embedded model, ``--dtype auto``,
``--compile auto``) with **its own empty compile cache**, so every start measures and decides afresh (the
decision cache would make later starts agree by construction: this measures the rule itself). A process spinning
on one core runs throughout, as on a busy host. The dtype each start reports in ListModels is tallied; the
figure of merit is the number of distinct dtypes per service (1: every start agreed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import sys
import tempfile
import time
from typing import Any

from bench import output

SERVICES = {"captioner": "captioner", "animator": "animator"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.starts_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=20, help="starts per service")
    parser.add_argument("--services", default="captioner,animator", help="comma-separated: captioner, animator")
    output.add_out(parser)
    return parser.parse_args(argv)


def _spin(stop: Any) -> None:
    while not stop.is_set():
        pass


async def _listed(service: str, target: str) -> tuple[str, str]:
    from imagewire.client import AsyncAnimateClient, AsyncCaptionClient

    client_type = AsyncCaptionClient if service == "captioner" else AsyncAnimateClient
    async with client_type(target, timeout=60) as client:
        model = (await client.list_models()).models[0]
        return model.dtype, model.choice


def start_once(service: str) -> tuple[str, str, float]:
    from imagewire_serving.launcher import ServerProcess

    with tempfile.TemporaryDirectory() as cache:
        command = [sys.executable, "-m", SERVICES[service], "--device", "cpu", "--compile-cache", cache]
        started = time.perf_counter()
        with ServerProcess.start(command, name=f"imagewire-{service}", start_timeout_s=600) as server:
            server.wait_ready()
            ready = time.perf_counter() - started
            dtype, choice = asyncio.run(_listed(service, server.target))
    return dtype, choice, ready


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
    spinner.start()
    result: dict[str, Any] = {"starts": args.starts, "busy_loop": "one process spinning on one core"}
    try:
        for service in [name for name in args.services.split(",") if name]:
            dtypes: collections.Counter[str] = collections.Counter()
            choices, ready = [], []
            for _ in range(args.starts):
                dtype, choice, seconds = start_once(service)
                dtypes[dtype] += 1
                choices.append(choice)
                ready.append(round(seconds, 1))
            result[service] = {"dtypes": dict(dtypes), "distinct_dtypes": len(dtypes), "ready_s": ready,
                               "first_choice": choices[0]}
    finally:
        stop.set()
        spinner.join(timeout=5)
    return output.emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
