"""Bug 5 of issue 24: through Envoy, the only animator restarted. Envoy's panic routing (with no healthy host it
sends calls to any) made the loading replacement answer "the video model is still loading", and the command gave
up 6 s after the restart. Now Envoy answers UNAVAILABLE while no replica is healthy, the client sends the call
again within its deadline, no call reaches the loading replica, and the video arrives once it is ready."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from imagewire_serving.app import LOAD_GATE_ENV
from imagewire_serving.frontdoor import Envoy, FrontDoor
from imagewire_serving.launcher import ServerProcess
from tests.support import script, solid

NAME = "imagewire-animator"
FLAGS = ("--device", "cpu", "--grace", "0", "--drain-window", "0")
ENV = {"OMP_NUM_THREADS": "1"}
SMALL = ["--width", "64", "--height", "64", "--num-frames", "8", "--num-inference-steps", "2", "--seed", "3",
         "--decode-chunk-size", "2"]
# How long the replacement is held loading, while the command waits.
HELD_LOADING_S = 4.0


def test_the_only_animator_restarting_behind_envoy_is_waited_for_and_never_called_while_loading(
        tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(solid(size=(64, 64)))
    out = tmp_path / "out.mp4"
    with ServerProcess.start([script(NAME), *FLAGS], name=NAME, env=ENV) as first:
        first.wait_ready()
        port = int(first.target.rpartition(":")[2])
        with Envoy.start(FrontDoor(captioners=(), animators=(first.target,), health_interval_s=0.25)) as envoy:
            envoy.wait_healthy("animator", 1)
            first.process.kill()
            first.process.wait(timeout=30)
            command = subprocess.Popen(
                [script("imagewire"), "animate", str(image), "-o", str(out), "--target", envoy.target,
                 "--no-health-check", "--job-id", "fd-restart", "--timeout", "240", *SMALL],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                gate = tmp_path / "loaded"
                seen: list[str] = []
                with ServerProcess.start([script(NAME), *FLAGS], name=NAME, env={**ENV, LOAD_GATE_ENV: str(gate)},
                                         port=port, on_stderr_line=seen.append) as second:
                    second.wait_listening()
                    time.sleep(HELD_LOADING_S)
                    assert command.poll() is None, command.communicate()  # still waiting, within its deadline
                    called_while_loading = [line for line in seen if "AnimateService/" in line]
                    gate.touch()
                    stdout, stderr = command.communicate(timeout=180)
            finally:
                if command.poll() is None:
                    command.kill()
                    command.communicate()
    assert called_while_loading == [], called_while_loading
    assert command.returncode == 0, stderr
    assert "still loading" not in stderr and f"wrote {out}" in stdout
    assert out.stat().st_size > 0
