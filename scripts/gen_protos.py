"""Regenerate the Python stubs in client/ from protos/ (the one command behind `make protos`).

Usage: python scripts/gen_protos.py [OUT_DIR]   (OUT_DIR defaults to client/)
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def proto_files() -> list[str]:
    """Every .proto under protos/, relative to it, in a stable order."""
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Run protoc once over all protos, writing *_pb2.py, *_pb2.pyi and *_pb2_grpc.py into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # grpc_tools bundles the well-known types (google/protobuf/*.proto) next to its module.
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "client")
