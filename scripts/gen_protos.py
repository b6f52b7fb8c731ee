"""Regenerate client/ from protos/ (the one command behind `make protos`): the protobuf and gRPC stubs
(*_pb2.py, *_pb2.pyi, *_pb2_grpc.py) and the typed result classes (*_types.py, see scripts/gen_types.py).

Usage: python -m scripts.gen_protos [OUT_DIR]   (OUT_DIR defaults to client/)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.gen_types import render
from scripts.proto_source import ROOT, read_protos, run_protoc


def generate(out_dir: Path) -> None:
    """Write every generated module of the client package into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_protoc(f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}")
    for proto in read_protos():
        path = out_dir / proto.descriptor.name.replace(".proto", "_types.py")
        path.write_text(render(proto))
        # Formatted like the rest of the code base, so the generated file reads as if written by hand.
        subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", "--line-length", "120", str(path)],
                       check=True)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "client")
