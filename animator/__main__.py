"""``imagewire-animator`` / ``python -m animator``: serve image-to-video over gRPC."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# Before torch loads: busy-waiting OpenMP threads steal the cores from everything else on a shared CPU host
# (one bench caption took 6.6 s instead of 1.2 s). An operator's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from animator import settings as animator_settings
from animator.app import AnimatorApp
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import fail_startup, run

NAME = "imagewire-animator"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = animator_settings.from_args(argv)
    except ValueError as error:
        return fail_startup(NAME, error)
    metrics = Metrics()
    return run(settings.server, AnimatorApp(settings, metrics), metrics, name=NAME)


if __name__ == "__main__":
    sys.exit(main())
