"""Everything generated from protos/ is exactly what `make protos` generates (the Python stubs and result classes,
the TypeScript package's modules, docs/api.md), and the client never needs torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.gen_protos import API_DOCS, GO_MODULE, GO_PLUGINS, PROTOC_GEN_ES, TS_PACKAGE, go_plugins_installed
from tests.support import require

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh `make protos` into an empty tree."""
    out = tmp_path_factory.mktemp("generated")
    subprocess.run([sys.executable, "-m", "scripts.gen_protos", str(out)], cwd=ROOT, check=True)
    return out


def stale_files(fresh: Path, committed: Path) -> list[str]:
    """The files that differ between two trees, or exist in only one."""
    names = {p.relative_to(tree) for tree in (fresh, committed) for p in tree.rglob("*") if p.is_file()}
    return sorted(str(name) for name in names if not (fresh / name).is_file() or not (committed / name).is_file()
                  or (fresh / name).read_bytes() != (committed / name).read_bytes())


def test_committed_stubs_are_fresh(generated: Path) -> None:
    out = generated / "client"
    files = sorted(p.relative_to(out) for p in out.rglob("*")
                   if p.is_file() and TS_PACKAGE.name not in p.parts and GO_MODULE.name not in p.parts)
    assert files, "protoc produced nothing"
    stale = [str(p) for p in files if (ROOT / "client" / p).read_bytes() != (out / p).read_bytes()]
    assert not stale, f"stale generated stubs (run `make protos`): {stale}"
    committed = sorted(
        p.relative_to(ROOT / "client")
        for pattern in ("*_pb2*", "*_types.py")
        for p in (ROOT / "client").rglob(pattern)
        if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts and "v1" in p.parts
    )
    assert sorted(committed) == files, "generated files without a proto (or protos without them)"


@pytest.mark.skipif(not PROTOC_GEN_ES.exists(), reason="needs `npm ci` in client/ts (make setup does it where npm "
                                                       "exists)")
def test_committed_typescript_is_fresh(generated: Path) -> None:
    fresh, committed = generated / TS_PACKAGE / "src" / "gen", ROOT / TS_PACKAGE / "src" / "gen"
    assert any(fresh.rglob("*_pb.ts")), "buf generate produced nothing"
    assert not stale_files(fresh, committed), f"stale TypeScript (run `make protos`): {stale_files(fresh, committed)}"


def test_committed_go_is_fresh(generated: Path) -> None:
    require(go_plugins_installed(), f"needs Debian's {' and '.join(GO_PLUGINS)} (.ci/run installs them)")
    fresh, committed = generated / GO_MODULE / "gen", ROOT / GO_MODULE / "gen"
    assert any(fresh.rglob("*_grpc.pb.go")), "buf generate produced nothing"
    assert not stale_files(fresh, committed), f"stale Go code (run `make protos`): {stale_files(fresh, committed)}"


def test_api_docs_are_fresh(generated: Path) -> None:
    fresh = (generated / API_DOCS).read_text()
    assert "#### AnimateService.Animate" in fresh and "#### CaptionService.Caption" in fresh
    assert (ROOT / API_DOCS).read_text() == fresh, "docs/api.md is stale (run `make protos`)"


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
