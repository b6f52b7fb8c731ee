"""The protos as protoc reads them, comments included: for the generators of typed results and of the API docs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
# grpc_tools bundles the well-known types (google/protobuf/*.proto) next to its module.
WELL_KNOWN = Path(protoc.__file__).parent / "_proto"

# Paths in SourceCodeInfo: a message is [4, i], its field [4, i, 2, j]; an enum [5, i], its value [5, i, 2, j];
# a service [6, i], its method [6, i, 2, j].
MESSAGE, FIELD, ENUM, VALUE, SERVICE, METHOD = 4, 2, 5, 2, 6, 2


def proto_files() -> list[str]:
    """Every .proto under protos/, relative to it, in a stable order."""
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))


def run_protoc(*options: str) -> None:
    code = protoc.main(["grpc_tools.protoc", f"-I{PROTOS}", f"-I{WELL_KNOWN}", *options, *proto_files()])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


@dataclass(frozen=True)
class ProtoFile:
    """One of our proto files: its descriptor and the comment above each declaration."""

    descriptor: descriptor_pb2.FileDescriptorProto
    comments: dict[tuple[int, ...], str]

    def comment(self, *path: int) -> str:
        """The leading comment of the declaration at ``path``, without the comment markers."""
        return self.comments.get(tuple(path), "")


def read_protos() -> list[ProtoFile]:
    """Our proto files (not their imports), parsed by protoc with their comments."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "protos.pb"
        run_protoc(f"--descriptor_set_out={out}", "--include_source_info")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return [ProtoFile(f, {tuple(loc.path): _clean(loc.leading_comments) for loc in f.source_code_info.location
                          if loc.leading_comments}) for f in files if f.name in proto_files()]


def _clean(comment: str) -> str:
    return "\n".join(line.removeprefix(" ") for line in comment.strip("\n").splitlines()).strip()
