"""`make demo`'s script on a fresh cache-free run: both servers start, a caption is printed, a video written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent


def test_demo_captions_and_animates_the_sample(tmp_path: Path) -> None:
    output = tmp_path / "demo.mp4"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True, text=True, timeout=400,
        env={**os.environ, "IMAGEWIRE_DEMO_OUTPUT": str(output)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imagewire-captioner ready" in done.stdout and "imagewire-animator ready" in done.stdout
    caption = next(line for line in done.stdout.splitlines() if line.startswith("caption: "))
    # The bundled sample is a drawn scene the embedded shapes model knows.
    assert caption.startswith("caption: a blue circle on a pink background  (model shapes-blip")
    # The embedded video model moves circles right (its circles drift downwards too: the model card's held-out
    # figures); the demo follows the circle through the video it wrote.
    motion = next(line for line in done.stdout.splitlines() if line.startswith("motion: "))
    found = re.fullmatch(r"motion: blue circle moved (\d+) px (up-|down-)?right \(in the 64x64 video\)", motion)
    assert found and int(found.group(1)) >= 3, motion
    with av.open(str(output)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 1
