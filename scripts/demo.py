"""`make demo`: start both servers on their embedded models, caption and animate the sample image, stop both.

The servers run as real processes on free ports; nothing is downloaded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def start(name: str) -> tuple[subprocess.Popen[str], str]:
    # The demo shows its own output; the servers' per-request log lines would drown it.
    process = subprocess.Popen([str(BIN / name), "--port", "0", "--log-level", "WARNING"], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    target = ""
    deadline = time.monotonic() + 300
    for line in process.stdout:
        if " listening on " in line:
            target = line.split()[-1]
            print(f"{name}: listening on {target}, loading its model...", flush=True)
        if line.startswith(f"{name} ready"):
            print(line.strip(), flush=True)
            return process, target
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit(f"{name} did not become ready")


def main() -> int:
    output = Path(os.environ.get("IMAGEWIRE_DEMO_OUTPUT", "demo.mp4"))
    servers: list[subprocess.Popen[str]] = []
    try:
        captioner, caption_target = start("imagewire-captioner")
        servers.append(captioner)
        animator, animate_target = start("imagewire-animator")
        servers.append(animator)
        return subprocess.call([str(BIN / "imagewire"), "demo", "--caption-target", caption_target,
                                "--animate-target", animate_target, "-o", str(output)])
    finally:
        for process in servers:
            process.send_signal(signal.SIGTERM)
        for process in servers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
