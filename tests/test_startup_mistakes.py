"""Start-up mistakes an operator makes (issue 24, rough edges): each is one line and exit 2, before the server
prints that it listens (a supervisor waiting for that line is not misled) and before torch loads."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from imagewire_serving.settings import gpu_device_nodes
from tests.support import script


@pytest.mark.parametrize(("argv", "env", "said"), [
    (["--model", "./no-such-model"], {}, "--model ./no-such-model: no such directory"),
    (["--host", "999.1.1.1"], {}, "--host 999.1.1.1 is not an IP address"),
    ([], {"IMAGEWIRE_CAPTIONER_MAX_BATCH_SIZ": "3"},
     "IMAGEWIRE_CAPTIONER_MAX_BATCH_SIZ is not a setting of imagewire-captioner: did you mean "
     "IMAGEWIRE_CAPTIONER_MAX_BATCH_SIZE?"),
    ([], {"IMAGEWIRE_CAPTIONER_PORT": "70000"}, "IMAGEWIRE_CAPTIONER_PORT (--port) must be <= 65535, not 70000"),
    ([], {"IMAGEWIRE_CAPTIONER_MAX_BATCH_SIZE": "0"},
     "IMAGEWIRE_CAPTIONER_MAX_BATCH_SIZE (--max-batch-size) must be >= 1"),
    (["--max-batch-size", "0"], {"IMAGEWIRE_CAPTIONER_MAX_BATCH_SIZE": "4"}, "--max-batch-size must be >= 1"),
    # A hub id not in the cache, the hub unreachable (a reserved name that never resolves, network or not): it took
    # 29 s and 23 log lines of retries.
    pytest.param(["--device", "cuda:0"], {}, "--device cuda:0: CUDA is not available on this machine",
                 marks=pytest.mark.skipif(gpu_device_nodes(), reason="the machine has a GPU")),
    (["--model", "someone/not-cached-anywhere"], {"HF_ENDPOINT": "https://hub.invalid"},
     "--model someone/not-cached-anywhere: not in the Hugging Face cache, and hub.invalid cannot be reached"),
])
def test_a_start_up_mistake_is_one_line_and_exit_2_before_listening(argv: list[str], env: dict[str, str],
                                                                    said: str) -> None:
    started = time.monotonic()
    done = subprocess.run([script("imagewire-captioner"), *argv], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})
    assert done.returncode == 2, done.stderr
    assert said in done.stderr, done.stderr
    assert "listening on" not in done.stdout and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert time.monotonic() - started < 15  # no model loaded, no torch imported
