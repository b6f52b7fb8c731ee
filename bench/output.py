"""What every benchmark does with its figures: print them as one JSON document, and write it to ``--out`` too."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_out(parser: argparse.ArgumentParser) -> None:
    """The ``--out FILE`` option every benchmark takes (``python -m bench`` passes it)."""
    parser.add_argument("--out", type=Path, help="also write the JSON here")


def emit(result: dict[str, Any], out: Path | None) -> int:
    """Print a benchmark's JSON (and write it to ``out``); the command's exit status."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
    return 0
