"""``imagewire-captioner`` / ``python -m captioner``: serve image captioning over gRPC."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# Before torch loads: busy-waiting OpenMP threads steal the cores from everything else on a shared CPU host
# (one bench caption took 6.6 s instead of 1.2 s). An operator's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from captioner import settings as captioner_settings
from captioner.app import CaptionerApp
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import fail_startup, run

NAME = "imagewire-captioner"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = captioner_settings.from_args(argv)
    except ValueError as error:
        return fail_startup(NAME, error)
    metrics = Metrics()
    return run(settings.server, CaptionerApp(settings, metrics), metrics, name=NAME)


if __name__ == "__main__":
    sys.exit(main())
