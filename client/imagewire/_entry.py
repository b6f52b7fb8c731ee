"""The ``imagewire`` console script: Ctrl-C is taken before the command's modules (gRPC, protobuf) load, so even
one pressed while they import ends with exit status 130 and one line, never a traceback."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("imagewire: interrupted\n")
    raise SystemExit(130)


def main() -> int:
    """Run the ``imagewire`` command (see :mod:`imagewire.cli`)."""
    signal.signal(signal.SIGINT, _interrupted)
    from imagewire.cli import main as command  # the commands install their own handler while they run

    return command()
