"""``python -m bench`` runs each benchmark as a command line of its own: every one must be a command line its
benchmark accepts, so that a full run never stops at one of them (decode_bench once lacked ``--out``)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from bench.__main__ import BENCHES, commands


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_every_benchmark_takes_the_command_line_python_m_bench_gives_it(quick: bool, tmp_path: Path) -> None:
    planned = commands(argparse.Namespace(device="cpu", quick=quick), tmp_path)
    assert set(planned) == set(BENCHES)
    for name, command in planned.items():
        module = importlib.import_module(command[2])
        parsed = module.parse_args(command[3:])  # argparse exits on a flag the benchmark does not take
        assert parsed.out == tmp_path / f"{name}.json", name
