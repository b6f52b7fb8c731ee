"""The committed stubs are exactly what `make protos` generates, and the client never needs torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "scripts.gen_protos", str(tmp_path)], cwd=ROOT, check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc produced nothing"
    stale = [str(p) for p in generated if (ROOT / "client" / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, f"stale generated stubs (run `make protos`): {stale}"
    committed = sorted(
        p.relative_to(ROOT / "client")
        for pattern in ("*_pb2*", "*_types.py")
        for p in (ROOT / "client").rglob(pattern)
        if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts and "v1" in p.parts
    )
    assert sorted(committed) == generated, "generated files without a proto (or protos without them)"


def test_client_imports_without_torch_or_server_code() -> None:
    code = (
        "import sys, imagewire.client, imagewire.cli, imagewire.caption.v1.caption_pb2_grpc, "
        "imagewire.animate.v1.animate_pb2_grpc\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'diffusers', 'PIL', 'captioner', 'animator', "
        "'imagewire_serving') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_rpc_message_and_field_is_documented() -> None:
    # buf lint (COMMENTS) enforces this where buf is installed; this keeps the rule where it is not.
    for proto in (ROOT / "protos").rglob("*.proto"):
        lines = proto.read_text().splitlines()
        for index, line in enumerate(lines):
            stripped = line.strip()
            declares = stripped.startswith(("service ", "rpc ", "message ", "enum ", "oneof ")) or (
                stripped.endswith(";") and "=" in stripped and not stripped.startswith(("syntax", "package", "option"))
            )
            if declares:
                assert lines[index - 1].strip().startswith("//"), f"{proto.name}:{index + 1} undocumented: {stripped}"
