"""`make demo`: start both servers on their embedded models, caption and animate the sample image, stop both.

The servers run as real processes on free ports, started and always stopped by the same launcher the tests use;
nothing is downloaded.
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
        return subprocess.call([str(BIN / "imagewire"), "demo", "--caption-target", caption_target,
                                "--animate-target", animate_target, "-o", str(output)])


if __name__ == "__main__":
    sys.exit(main())
