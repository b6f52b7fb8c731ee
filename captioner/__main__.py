"""``imagewire-captioner`` / ``python -m captioner``: serve image captioning over gRPC."""

from __future__ import annotations

import sys
from collections.abc import Sequence

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
