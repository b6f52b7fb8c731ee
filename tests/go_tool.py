"""The Go toolchain as the tests and `make protos` use it: Debian's go, building client/go offline (no module
proxy: each module comes from /usr/share/gocode through client/go/go.mod's replace directives)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GO_MODULE = ROOT / "client" / "go"
GO_EXAMPLE = ROOT / "examples" / "go"


def go_ready() -> bool:
    """Whether go and Debian's gRPC sources (golang-google-grpc-dev) are installed."""
    return shutil.which("go") is not None and Path("/usr/share/gocode/src/google.golang.org/grpc").is_dir()


def go_env(**extra: str) -> dict[str, str]:
    """The environment of a go command on client/go: offline, modules resolved by go.mod's replace directives."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOSUMDB": "off", "GOTOOLCHAIN": "local", **extra}
    if "HOME" not in env and "GOCACHE" not in env:  # go keeps its build cache under $HOME by default
        env["GOCACHE"] = str(Path(tempfile.gettempdir()) / "imagewire-go-build")
    return env
