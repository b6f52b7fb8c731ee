"""A server that cannot serve what it was given says so in one line naming the cause and exits 2, at once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from imagewire_serving.launcher import launch
from tests.support import script

ENV = {"OMP_NUM_THREADS": "1"}


def failed_start(*args: str, command: str = "imagewire-captioner") -> list[str]:
    """The stderr lines of a server started with ``args`` that must refuse to start (exit 2)."""
    done = subprocess.run([script(command), "--port", "0", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", **ENV})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert 1 <= len(lines) <= 2 and "Traceback" not in done.stderr, done.stderr
    return lines


def test_a_busy_port_is_refused_not_shared(tiny_caption_model: str) -> None:
    # gRPC's SO_REUSEPORT would let a second server take part of the first one's calls.
    with launch([script("imagewire-captioner"), "--model", tiny_caption_model], name="imagewire-captioner",
                env=ENV) as running:
        port = running.target.rsplit(":", 1)[1]
        done = subprocess.run([script("imagewire-captioner"), "--port", port, "--model", tiny_caption_model],
                              capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", **ENV})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"imagewire-captioner: error: --port {port}: cannot listen on 127.0.0.1:{port}: " \
                                  "Address already in use"


@pytest.mark.parametrize("command", ["imagewire-captioner", "imagewire-animator"])
def test_a_missing_model_directory_is_named(command: str) -> None:
    (line,) = failed_start("--model", "/nonexistent/model-dir", command=command)
    assert line == f"{command}: error: --model /nonexistent/model-dir: no such directory"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_a_device_the_machine_lacks_is_named() -> None:
    (line,) = failed_start("--device", "cuda:0")
    assert line == "imagewire-captioner: error: --device cuda:0: CUDA is not available on this machine"


def test_a_model_that_cannot_load_is_named_with_its_cause(tmp_path: Path) -> None:
    directory = tmp_path / "empty-model"
    directory.mkdir()
    (line,) = failed_start("--model", str(directory))
    assert line.startswith(f"imagewire-captioner: error: --model {directory}: cannot load it: "), line
