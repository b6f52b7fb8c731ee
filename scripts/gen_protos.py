"""Regenerate everything derived from protos/ (the one command behind `make protos`):

- client/: the protobuf and gRPC stubs (*_pb2.py, *_pb2_grpc.py), their type stubs (*_pb2.pyi, *_pb2_grpc.pyi, from
  mypy-protobuf: typed stubs and servicers with the proto comments as docstrings, which mypy checks our code against)
  and the typed result classes (*_types.py, see scripts/gen_types.py);
- client/ts/src/gen/: the TypeScript messages and service descriptors (`buf generate` with client/ts/buf.gen.yaml
  and protoc-gen-es from client/ts/node_modules; skipped with a note where `npm ci` has not run there);
- client/go/gen/: the Go messages and gRPC stubs (`buf generate` with client/go/buf.gen.yaml and Debian's
  protoc-gen-go and protoc-gen-go-grpc from PATH; skipped with a note where they are not installed);
- docs/api.md: the contract reference (scripts/gen_api_docs.py).

Usage: python -m scripts.gen_protos [OUT_ROOT]   (OUT_ROOT defaults to the repository: the outputs are written at
the same paths under it, which is how the tests check the committed files are fresh)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from scripts import gen_api_docs
from scripts.gen_types import render
from scripts.proto_source import ROOT, read_protos, run_protoc

TS_PACKAGE = Path("client") / "ts"
# buf.gen.yaml's plugin, installed by `npm ci` in client/ts.
PROTOC_GEN_ES = ROOT / TS_PACKAGE / "node_modules" / ".bin" / "protoc-gen-es"
# The buf binary of the buf-bin package, installed beside this interpreter.
BUF = Path(sys.executable).parent / "buf"
# mypy-protobuf's protoc plugins, installed beside this interpreter (a dev dependency); named explicitly so that
# `make protos` needs nothing on PATH.
MYPY_PLUGINS = [f"--plugin=protoc-gen-{name}={Path(sys.executable).parent / f'protoc-gen-{name}'}"
                for name in ("mypy", "mypy_grpc")]
API_DOCS = Path("docs") / "api.md"
GO_MODULE = Path("client") / "go"
# buf.gen.yaml's plugins for Go, from Debian's protoc-gen-go and protoc-gen-go-grpc packages.
GO_PLUGINS = ("protoc-gen-go", "protoc-gen-go-grpc")


def generate_python(out_dir: Path) -> None:
    """Write every generated module of the Python client package into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_protoc(*MYPY_PLUGINS, f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
               f"--mypy_out=quiet:{out_dir}", f"--mypy_grpc_out=quiet:{out_dir}")
    for proto in read_protos():
        path = out_dir / proto.descriptor.name.replace(".proto", "_types.py")
        path.write_text(render(proto))
        # Formatted like the rest of the code base, so the generated file reads as if written by hand.
        subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", "--line-length", "120", str(path)],
                       check=True)


def generate_typescript(package_dir: Path) -> bool:
    """Write the TypeScript package's generated modules under ``package_dir``/src/gen; False where the plugin is
    not installed."""
    if not PROTOC_GEN_ES.exists():
        return False
    # buf resolves buf.gen.yaml's input and plugin paths from client/ts; --output moves only what it writes.
    subprocess.run([str(BUF), "generate", "--output", str(package_dir.resolve())], cwd=ROOT / TS_PACKAGE, check=True)
    return True


def go_plugins_installed() -> bool:
    """Whether the Go plugins are on PATH (.ci/run installs them)."""
    return all(shutil.which(plugin) for plugin in GO_PLUGINS)


def generate_go(module_dir: Path) -> bool:
    """Write the Go module's generated packages under ``module_dir``/gen; False where the plugins are not
    installed."""
    if not go_plugins_installed():
        return False
    subprocess.run([str(BUF), "generate", "--output", str(module_dir.resolve())], cwd=ROOT / GO_MODULE, check=True)
    return True


def generate_docs(path: Path) -> None:
    """Write the API reference generated from the protos' comments."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(gen_api_docs.render(read_protos()))


def generate(root: Path) -> None:
    """Write every output under ``root`` at its path in the repository."""
    generate_python(root / "client")
    if not generate_typescript(root / TS_PACKAGE):
        print(f"skipped {TS_PACKAGE}/src/gen: run `npm ci` in {TS_PACKAGE} (make setup does, where npm exists)",
              file=sys.stderr)
    if not generate_go(root / GO_MODULE):
        print(f"skipped {GO_MODULE}/gen: install Debian's {' and '.join(GO_PLUGINS)} (.ci/run does)", file=sys.stderr)
    generate_docs(root / API_DOCS)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
