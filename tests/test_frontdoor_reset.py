"""Envoy resets a video stream mid-video (the replica serving it is SIGKILLed): gRPC reports the reset as INTERNAL
("Stream removed", RST_STREAM), Connect for Node as INTERNAL too, Connect's gRPC-Web (fetch) as UNKNOWN
"terminated"; the Python client and the TypeScript client over both transports resume it as a dropped connection
and finish the file with the SHA-256 of an undisturbed run of the same seed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from imagewire.client import AnimateClient, AnimateEvent, ImagewireError, JobStatus, Resume, VideoChunk
from imagewire.client import _resume as resume_module

from bench.replicas import ANIMATOR, Fleet, Replica
from tests.gates import poll_until
from tests.support import solid

# Many small decode chunks: the replica still has most of the video to decode when the first chunk arrives.
PARAMS = {"width": 128, "height": 128, "num_frames": 24, "num_inference_steps": 2, "decode_chunk_size": 1}
IMAGE = solid(size=(96, 64))
FAST = Resume(backoff_s=0.2, max_backoff_s=1.0)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node" / "imagewire.mjs"
RESTART_S = 120.0


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(caption_model=None, captioners=0, animators=2, python=sys.executable) as running:
        yield running


@pytest.fixture(scope="module")
def reference(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The SHA-256 of an undisturbed run of the request (one replica, called directly)."""
    with AnimateClient(fleet.of(ANIMATOR)[0].address) as client:
        return client.animate_to_file(IMAGE, tmp_path_factory.mktemp("ref") / "v.mp4", seed=9, **PARAMS).sha256


def settled(fleet: Fleet) -> None:
    """Both replicas serving again and Envoy sending to both."""
    poll_until(lambda: all(r.ready for r in fleet.replicas), timeout=RESTART_S, what="the replicas ready")
    assert fleet.envoy is not None
    fleet.envoy.wait_healthy("animator", 2)


def kill_holder(fleet: Fleet, job_id: str) -> Replica:
    """SIGKILL the replica running ``job_id`` (and start its replacement)."""
    holder = fleet.holder(job_id)
    assert holder is not None, f"no replica holds {job_id}"
    fleet.kill_and_restart(holder)
    return holder


def test_the_python_client_resumes_a_stream_envoy_reset(fleet: Fleet, reference: bytes, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settled(fleet)
    failures: list[ImagewireError] = []
    after = resume_module.Download.after

    def recording(self: resume_module.Download, error: ImagewireError, attempt: resume_module.Attempt
                  ) -> resume_module.Attempt:
        failures.append(error)
        return after(self, error, attempt)

    monkeypatch.setattr(resume_module.Download, "after", recording)
    streams, killed = [], []

    def on_event(event: AnimateEvent) -> None:
        if isinstance(event, JobStatus):
            streams.append(event.provenance_key)
        if isinstance(event, VideoChunk) and not killed:
            killed.append(kill_holder(fleet, "reset-python"))

    with AnimateClient(fleet.target, health_check=False, timeout=120) as client:
        result = client.animate_to_file(IMAGE, tmp_path / "v.mp4", job_id="reset-python", seed=9, on_event=on_event,
                                        resume=FAST, **PARAMS)
    assert result.sha256 == reference and (tmp_path / "v.mp4").stat().st_size == result.total_bytes
    # The reset came as INTERNAL after part of the video, and the download went on.
    reset = failures[0]
    assert reset.code is grpc.StatusCode.INTERNAL and "RST_STREAM" in reset.message, failures
    assert reset.bytes_received > 0 and resume_module.dropped(reset)
    assert len(streams) >= 2 and len(set(streams)) == 1  # every replica: one provenance
    assert result.provenance is not None and result.provenance.key == streams[0]


@pytest.mark.usefixtures("typescript_client")
@pytest.mark.parametrize(("transport", "reset"), [
    # Node's HTTP/2 stream error, as Connect reports it.
    ("grpc", "INTERNAL: Stream closed with error code NGHTTP2_INTERNAL_ERROR"),
    # fetch's TypeError for a body cut short, which Connect wraps as UNKNOWN.
    ("grpc-web", "UNKNOWN: terminated"),
])
def test_the_typescript_client_resumes_a_stream_envoy_reset(fleet: Fleet, reference: bytes, tmp_path: Path,
                                                             transport: str, reset: str) -> None:
    if shutil.which("node") is None or not (EXAMPLE.parent / "node_modules" / "@imagewire").exists():
        pytest.skip("needs node and `npm ci` in examples/node")
    settled(fleet)
    job_id = f"reset-node-{transport}"
    image = tmp_path / "image.png"
    image.write_bytes(IMAGE)
    out = tmp_path / "v.mp4"
    flags = ["--events", *(["--grpc-web"] if transport == "grpc-web" else [])]
    fields = [f"{name}={value}" for name, value in PARAMS.items()]
    node = subprocess.Popen(["node", str(EXAMPLE), "animate", str(image), str(out), fleet.target, *flags, "seed=9",
                             f"job_id={job_id}", *fields], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert node.stderr is not None
        for line in node.stderr:
            if line.strip() == "event chunk" and "event chunk" not in lines:
                kill_holder(fleet, job_id)
            lines.append(line.strip())
        stdout, _ = node.communicate(timeout=120)
    finally:
        node.kill()
    assert node.returncode == 0, [line for line in lines if not line.startswith("event ")]
    summary = json.loads(stdout)
    assert summary["sha256"] == reference.hex() == hashlib.sha256(out.read_bytes()).hexdigest()
    # The reset first; then (its replica gone) NOT_FOUND from the other one, and the video generated again there.
    resumed = [line.removeprefix("resume ") for line in lines if line.startswith("resume ")]
    assert resumed[0] == reset, resumed
    assert summary["events"]["job"] >= 2 and summary["provenance"]
