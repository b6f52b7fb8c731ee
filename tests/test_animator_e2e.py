"""The installed console scripts end to end: imagewire-animator as a subprocess, imagewire animate against it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import av
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from animator import tiny
from animator.settings import AnimatorSettings
from imagewire_serving.launcher import launch
from tests.support import script, solid

# The test machine's two cores are shared with other jobs: one OpenMP thread is much faster than two spinning.
ENV = {"OMP_NUM_THREADS": "1"}


def test_animator_process_serves_health_reflection_and_the_cli(tmp_path: Path) -> None:
    tiny.ensure_model("tiny")  # built once here rather than inside the server's start-up
    image = tmp_path / "img.png"
    image.write_bytes(solid(size=(120, 80)))
    out = tmp_path / "out.mp4"
    # No --model: the embedded default.
    with launch([script("imagewire-animator")], name="imagewire-animator", env=ENV) as server:
        with grpc.insecure_channel(server.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="imagewire.animate.v1.AnimateService"), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            responses = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
            names = {s.name for s in responses[0].list_services_response.service}
            assert "imagewire.animate.v1.AnimateService" in names

        command = [script("imagewire"), "animate", str(image), "-o", str(out), "--target", server.target,
                   "--width", "96", "--height", "64", "--num-frames", "6", "--fps", "5", "--num-inference-steps", "2",
                   "--seed", "5"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "seed 5" in done.stdout and "denoise" in done.stderr  # the progress display
        container = av.open(str(out))
        frames = list(container.decode(video=0))
        assert len(frames) == 6 and (frames[0].width, frames[0].height) == (96, 64)
        assert container.streams.video[0].average_rate == 5
        first = hashlib.sha256(out.read_bytes()).digest()

        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(out.read_bytes()).digest() == first  # same seed, same bytes, across calls

        done = subprocess.run([*command[:-2], "--width", "100"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert "INVALID_ARGUMENT" in done.stderr and "width:" in done.stderr

        check_job_commands(server.target, command, tmp_path, first)
        assert server.terminate() == 0


def check_job_commands(target: str, animate: list[str], tmp_path: Path, digest: bytes) -> None:
    """animate --job-id --preview-dir, then watch (whole, and from an offset into a partial file), then cancel."""
    previews = tmp_path / "previews"
    done = subprocess.run([*animate, "--job-id", "e2e-job", "--preview-dir", str(previews)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "job e2e-job" in done.stderr
    assert sorted(path.name for path in previews.iterdir()) == ["preview-0002.webp"]  # 2 steps, one every 2
    video = Path(animate[animate.index("-o") + 1]).read_bytes()

    watched = tmp_path / "watched.mp4"
    done = subprocess.run([script("imagewire"), "watch", "e2e-job", "-o", str(watched), "--target", target,
                           "--quiet"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(watched.read_bytes()).digest() == digest
    watched.write_bytes(video[:1000])  # a download cut short: continue it from its 1000 bytes
    done = subprocess.run([script("imagewire"), "watch", "e2e-job", "-o", str(watched), "--offset", "1000",
                           "--target", target, "--quiet"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert watched.read_bytes() == video

    done = subprocess.run([script("imagewire"), "cancel", "e2e-job", "--target", target], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "job e2e-job: succeeded" in done.stdout, done.stderr
    done = subprocess.run([script("imagewire"), "watch", "no-such-job", "-o", str(tmp_path / "x.mp4"),
                           "--target", target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "NOT_FOUND" in done.stderr and "'no-such-job'" in done.stderr


def test_bad_settings_fail_fast() -> None:
    done = subprocess.run([script("imagewire-animator"), "--max-queue", "0"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--max-queue" in done.stderr


def test_environment_variables_fill_in_flags_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEWIRE_ANIMATOR_MAX_QUEUE", "3")
    monkeypatch.setenv("IMAGEWIRE_ANIMATOR_CPU_OFFLOAD", "true")
    monkeypatch.setenv("IMAGEWIRE_ANIMATOR_USD_PER_OUTPUT_PIXEL", "2e-8")
    monkeypatch.setenv("IMAGEWIRE_ANIMATOR_PORT", "6000")
    settings = AnimatorSettings.from_args(["--max-num-frames", "30"])
    assert (settings.limits.max_queue, settings.limits.max_num_frames, settings.cpu_offload) == (3, 30, True)
    assert settings.limits.usd_per_output_pixel == 2e-8 and settings.server.port == 6000
    assert AnimatorSettings.from_args([]).server.port == 6000
    monkeypatch.delenv("IMAGEWIRE_ANIMATOR_PORT")
    assert AnimatorSettings.from_args([]).server.port == 50052
    monkeypatch.setenv("IMAGEWIRE_ANIMATOR_USD_PER_OUTPUT_PIXEL", "-1")
    with pytest.raises(ValueError, match="usd-per-output-pixel"):
        AnimatorSettings.from_args([])
    monkeypatch.delenv("IMAGEWIRE_ANIMATOR_USD_PER_OUTPUT_PIXEL")
    monkeypatch.setenv("IMAGEWIRE_ANIMATOR_RETENTION_BYTES", "1000")
    with pytest.raises(ValueError, match="--retention-bytes"):
        AnimatorSettings.from_args([])
    monkeypatch.delenv("IMAGEWIRE_ANIMATOR_RETENTION_BYTES")
    with pytest.raises(ValueError, match=r"--detach-grace .* must not exceed --max-detach-grace"):
        AnimatorSettings.from_args(["--detach-grace", "700"])
    assert AnimatorSettings.from_args(["--detach-grace", "700", "--max-detach-grace", "900"]).limits.detach_grace == 700
