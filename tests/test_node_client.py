"""A Node.js client built from protos/ at run time (@grpc/grpc-js + proto-loader) calls the real captioner."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from imagewire_serving.launcher import launch
from tests.support import script, solid

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="needs node and `npm ci` in examples/node (make setup does it where npm exists)",
)


def test_node_client_captions_through_the_contract(tmp_path: Path, tiny_caption_model: str) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(solid(size=(30, 20)))
    with launch([script("imagewire-captioner"), "--model", tiny_caption_model],
                name="imagewire-captioner") as server:
        done = subprocess.run(["node", str(EXAMPLE / "imagewire.js"), "caption", str(image), server.target],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        response = json.loads(done.stdout)
        assert response["text"] and response["model_id"] == tiny_caption_model
        assert int(response["usage"]["input_pixels"]) == 600

        image.write_bytes(b"not an image")
        done = subprocess.run(["node", str(EXAMPLE / "imagewire.js"), "caption", str(image), server.target],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and done.stderr.startswith("INVALID_ARGUMENT: image is not a decodable")
        assert server.terminate() == 0
