"""`make demo`: start both servers on their embedded models, caption and animate the sample image, stop both,
and say where the shape in the video went.

The servers run as real processes on free ports, started and always stopped by the same launcher the tests use;
nothing is downloaded. The sample is a scene of the embedded models' world (``animator.training.motion
.sample_scene``), so the caption and the motion printed can be checked against the picture.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from imagewire_serving.launcher import ServerProcess, ServerStartError

BIN = Path(sys.executable).parent
SERVERS = ("imagewire-captioner", "imagewire-animator")


def start(stack: contextlib.ExitStack, name: str) -> str:
    """Start one server, stopped when ``stack`` closes; returns its target once its model is ready."""
    # The demo shows its own output; the servers' per-request log lines would drown it. Their warnings still
    # show, as they come.
    server = stack.enter_context(
        ServerProcess.start([str(BIN / name), "--log-level", "WARNING"], name=name, echo=True)
    )
    print(f"{name}: listening on {server.wait_listening()}, loading its model...", flush=True)
    print(server.wait_ready(), flush=True)
    return server.target


def main() -> int:
    output = Path(os.environ.get("IMAGEWIRE_DEMO_OUTPUT", "demo.mp4"))
    with contextlib.ExitStack() as stack:
        try:
            caption_target, animate_target = (start(stack, name) for name in SERVERS)
        except ServerStartError as error:
            raise SystemExit(str(error)) from None
        status = subprocess.call([str(BIN / "imagewire"), "demo", "--caption-target", caption_target,
                                  "--animate-target", animate_target, "-o", str(output)])
    if status == 0:
        print(f"motion: {where_it_went(output)}", flush=True)
    return status


def where_it_went(video: Path) -> str:
    """One line from the tracker: how far and which way the sample's shape moved in ``video``."""
    import av
    import numpy as np

    from animator.training.motion import sample_scene
    from animator.training.tracking import track

    with av.open(str(video)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    scene = sample_scene()
    shape = scene.shapes[0]
    line = track(frames, shape.rgb, scene.background_rgb).describe(f"{shape.colour} {shape.shape}")
    return f"{line} (in the {frames.shape[2]}x{frames.shape[1]} video)"


if __name__ == "__main__":
    sys.exit(main())
