"""The Node.js example (examples/node), over the generated TypeScript client, calls both real servers: animate too."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from animator import tiny
from imagewire_serving.launcher import ServerProcess, launch
from tests.support import free_port, require, script, solid

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "node"
# One OpenMP thread: the two cores are shared by both servers and node.
ENV = {"OMP_NUM_THREADS": "1"}

# The package built from its current sources.
pytestmark = pytest.mark.usefixtures("typescript_client", "node_example")


@pytest.fixture(scope="module")
def node_example() -> None:
    require(shutil.which("node") is not None and (EXAMPLE / "node_modules" / "@imagewire").exists(),
            "needs node and `npm ci` in examples/node (make setup does it where npm exists)")


def node(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(EXAMPLE / "imagewire.mjs"), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def captioner(tiny_caption_model: str) -> Iterator[ServerProcess]:
    with launch([script("imagewire-captioner"), "--model", tiny_caption_model], name="imagewire-captioner",
                env=ENV) as server:
        yield server


@pytest.fixture(scope="module")
def animator() -> Iterator[ServerProcess]:
    tiny.ensure_model("tiny")  # built once here rather than inside the server's start-up deadline
    with launch([script("imagewire-animator")], name="imagewire-animator", env=ENV) as server:
        yield server


def test_caption_through_the_typed_client(tmp_path: Path, captioner: ServerProcess, tiny_caption_model: str) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(solid(size=(30, 20)))
    done = node("caption", str(image), captioner.target, "max_new_tokens=4")
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)  # the CaptionResponse in proto JSON
    assert response["text"] and response["modelId"] == tiny_caption_model and response["batchSize"] >= 1
    assert response["usage"]["inputPixels"] == "600"

    done = node("caption", str(image), f"http://{captioner.target}", "num_beams=99")
    assert done.returncode == 1 and done.stderr.startswith("INVALID_ARGUMENT: num_beams"), done.stderr
    image.write_bytes(b"not an image")
    done = node("caption", str(image), captioner.target)
    assert done.returncode == 1 and done.stderr.startswith("INVALID_ARGUMENT: image is not a decodable"), done.stderr


def test_animate_streams_a_verified_video_of_the_requested_frames(tmp_path: Path, animator: ServerProcess) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(solid(size=(120, 80)))
    out = tmp_path / "out.mp4"
    done = node("animate", str(image), str(out), animator.target, "num_frames=5", "width=96", "height=64",
                "num_inference_steps=2", "decode_chunk_size=2", "seed=3")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    header, result = summary["header"], summary["result"]
    data = out.read_bytes()
    # The file node wrote is the one the server described: length, SHA-256 (checked by VideoSink in node and
    # again here), seed.
    assert int(result["totalBytes"]) == len(data) and summary["sha256"] == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(result["sha256"]) == hashlib.sha256(data).digest()
    assert header["seed"] == result["seed"] == "3" and header["numFrames"] == 5
    # The job's status first, then progress, one header before any chunk, chunks interleaved with progress, the
    # result last.
    assert summary["order"][:2] == ["job", "progress"] and summary["order"][-1] == "result"
    assert summary["events"]["job"] == 1
    assert summary["order"].index("header") < summary["order"].index("chunk")
    assert summary["events"]["header"] == 1 and summary["events"]["result"] == 1 and summary["events"]["chunk"] >= 3
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        assert header["codecs"] == "avc1." + bytes(stream.codec_context.extradata)[1:4].hex()
    assert len(frames) == 5 and {(f.width, f.height) for f in frames} == {(96, 64)}


def test_animate_webm_and_errors(tmp_path: Path, animator: ServerProcess) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(solid(size=(120, 80)))
    out = tmp_path / "out.webm"
    done = node("animate", str(image), str(out), animator.target, "num_frames=3", "width=64", "height=64",
                "num_inference_steps=1", "format=VIDEO_FORMAT_WEBM_VP9", f"seed={2**64 - 1}")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["header"]["mimeType"], summary["header"]["codecs"]) == ("video/webm", "vp09.00.10.08")
    assert summary["header"]["seed"] == summary["result"]["seed"] == str(2**64 - 1)  # every digit, both ways
    with av.open(str(out)) as container:
        assert len(list(container.decode(video=0))) == 3

    # A rejected request: the status and the server's message, and no partial file left behind.
    bad = tmp_path / "bad.mp4"
    done = node("animate", str(image), str(bad), animator.target, "width=63")
    assert done.returncode == 1 and done.stderr.startswith("INVALID_ARGUMENT: width"), done.stderr
    assert not bad.exists()
    # A value the field cannot take is a bad command line naming it, never UNKNOWN, before anything is sent.
    for value in ("num_frames=abc", "num_frames=-1", "nosuch=3"):
        done = node("animate", str(image), str(bad), f"127.0.0.1:{free_port()}", value)
        assert done.returncode == 2 and done.stderr.startswith("error: cannot decode"), done.stderr
        assert "UNKNOWN" not in done.stderr and not bad.exists()
    # No server there.
    done = node("caption", str(image), f"127.0.0.1:{free_port()}", timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("UNAVAILABLE: "), done.stderr
