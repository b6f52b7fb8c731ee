"""``imagewire-animator`` / ``python -m animator``: serve image-to-video over gRPC."""

from __future__ import annotations

import sys
from collections.abc import Sequence

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
