"""``imagewire-captioner`` / ``python -m captioner``: serve image captioning over gRPC."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from imagewire_serving import entry

entry.prepare_process()

from captioner.settings import CaptionerSettings


def main(argv: Sequence[str] | None = None) -> int:
    return entry.main(CaptionerSettings, "captioner.app:CaptionerApp", argv)


if __name__ == "__main__":
    sys.exit(main())
