"""The installed console scripts end to end: imagewire-captioner as a subprocess, imagewire caption against it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from imagewire_serving.launcher import launch
from tests.support import script, solid

IDLE_SAMPLE_S = 3.0


def test_captioner_process_serves_health_reflection_and_the_cli(tmp_path: Path, tiny_caption_model: str) -> None:
    image = tmp_path / "img.png"
    image.write_bytes(solid())
    command = [script("imagewire-captioner"), "--model", tiny_caption_model]
    with launch(command, name="imagewire-captioner") as server:
        with grpc.insecure_channel(server.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            responses = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
            names = {s.name for s in responses[0].list_services_response.service}
            assert "imagewire.caption.v1.CaptionService" in names

        done = subprocess.run([script("imagewire"), "caption", str(image), "--target", server.target],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() and all(w.isalpha() for w in done.stdout.split())

        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not an image")
        done = subprocess.run([script("imagewire"), "caption", str(bad), "--target", server.target],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert "INVALID_ARGUMENT: image is not a decodable" in done.stderr

        assert idle_cpu_share(server.process.pid) < 0.02, "an idle server takes CPU time"
        assert server.terminate() == 0


def idle_cpu_share(pid: int) -> float:
    """The share of one CPU a server that just served takes over a few idle seconds: its threads (OpenMP's among
    them, which spin under OMP_WAIT_POLICY=ACTIVE) must sleep."""
    process = psutil.Process(pid)
    time.sleep(0.5)  # let the last answer's writes finish
    before, started = process.cpu_times(), time.monotonic()
    time.sleep(IDLE_SAMPLE_S)  # the measurement itself: CPU time over a stretch of idleness
    after = process.cpu_times()
    return (after.user + after.system - before.user - before.system) / (time.monotonic() - started)


def test_a_bad_flag_or_environment_value_exits_2_naming_it() -> None:
    done = subprocess.run([script("imagewire-captioner"), "--device", "tpu:9"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--device" in done.stderr
    done = subprocess.run([script("imagewire-captioner")], capture_output=True, text=True, timeout=60,
                          env={"IMAGEWIRE_CAPTIONER_MAX_BATCH_SIZE": "0", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "max-batch-size" in done.stderr
