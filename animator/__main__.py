"""``imagewire-animator`` / ``python -m animator``: serve image-to-video over gRPC."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from imagewire_serving import entry

entry.prepare_process()

from animator.settings import AnimatorSettings


def main(argv: Sequence[str] | None = None) -> int:
    return entry.main(AnimatorSettings, "animator.app:AnimatorApp", argv)


if __name__ == "__main__":
    sys.exit(main())
