"""What a model's output depends on besides the request (the contract's ``Provenance``), decided once at start-up.

Two replicas give the same bytes for the same request and seed only if they load the same files, in the same
dtype, on the same kind of device, with the same number of CPU threads (a parallel kernel splits its sums by
thread: 1 and 2 threads gave other video bytes), through the same library versions, eager or compiled alike.
Each of those is read from the loaded backend and the process, never from the flags that asked for them, so
however the dtype is chosen the provenance says the one in use. ``key`` digests them all: callers compare keys.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from imagewire_serving.compiling import Part

_READ_BYTES = 1024 * 1024
# A Hugging Face cache keeps each file once, in blobs/ under its content hash, and links it from a snapshot.
_BLOBS = "blobs"
_SNAPSHOTS = "snapshots"


@dataclass(frozen=True)
class ModelFiles:
    """The identity of a model's files: their digest, and the hub revision they came from ("" if local)."""

    digest: str
    revision: str


class Loaded(Protocol):
    """What the provenance reads of a loaded backend (see :class:`imagewire_serving.engine.Backend`)."""

    @property
    def files(self) -> ModelFiles: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def compile_parts(self) -> Sequence[Part]: ...


@dataclass(frozen=True)
class Provenance:
    """The contract's Provenance message, field for field; build it with :meth:`of`."""

    key: str
    model_digest: str
    model_revision: str
    dtype: str
    device_kind: str
    libraries: tuple[str, ...]
    compiled: bool
    threads: int
    compiled_parts: tuple[str, ...]

    @classmethod
    def of(cls, backend: Loaded, libraries: Sequence[str], batch: int | None = None) -> Provenance:
        """The provenance of a loaded backend in this process, computed through ``libraries`` (distribution
        names: "torch", "diffusers"...), for its batches of ``batch`` (None: as it runs every batch; a part may be
        compiled for small batches only)."""
        import torch

        from imagewire_serving.compiling import compiled_for
        from imagewire_serving.device import dtype_name

        compiled = compiled_for(backend.compile_parts(), batch)
        values: dict[str, Any] = {
            "model_digest": backend.files.digest, "model_revision": backend.files.revision,
            "dtype": dtype_name(backend.dtype), "device_kind": device_kind(backend.device),
            "libraries": library_versions(tuple(libraries)),
            "compiled": bool(compiled),
            "threads": torch.get_num_threads() if backend.device.type == "cpu" else 0,
            "compiled_parts": compiled,
        }
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return cls(key=hashlib.sha256(canonical.encode()).hexdigest()[:16], **values)

    def fields(self) -> dict[str, Any]:
        """The message's fields as keyword arguments."""
        return asdict(self)


@functools.cache
def model_files(source: str) -> ModelFiles:
    """The identity of the files a model loads from: a local directory, or a hub id found in the local Hugging
    Face cache (nothing is downloaded); an id not in the cache has an empty identity."""
    path = Path(source).expanduser()
    if not path.is_dir():
        found = _cached_snapshot(source)
        if found is None:
            return ModelFiles("", "")
        path = found
    revision = path.name if path.parent.name == _SNAPSHOTS else ""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(_content_id(file) + b"\0")
    return ModelFiles(f"sha256:{digest.hexdigest()}", revision)


def _content_id(file: Path) -> bytes:
    """A file's content hash: its blob's name in a Hugging Face cache (the hub's own hash of it), else read."""
    target = file.resolve()
    if target != file.absolute() and target.parent.name == _BLOBS:
        return target.name.encode()
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        while block := handle.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest().encode()


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not a hub id, or not in the cache: nothing to identify it by
        return None


@functools.cache
def device_kind(device: torch.device) -> str:
    """The kind of ``device``: a CPU's model name and the kernels' instruction set, a GPU's name and compute
    capability."""
    import torch

    from imagewire_serving.device import Capabilities

    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda: {torch.cuda.get_device_name(device)}, sm_{major}{minor}"
    found = Capabilities.detect(device)
    extras = [name for name, present in (("AVX512-BF16", found.avx512_bf16), ("AMX-BF16", found.amx_bf16),
                                          ("AMX-FP16", found.amx_fp16)) if present]
    return ", ".join([f"{device.type}: {cpu_model()}", torch.backends.cpu.get_cpu_capability(), *extras])


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def library_versions(names: tuple[str, ...]) -> tuple[str, ...]:
    """"name version" of each installed distribution (name alone when it is not installed)."""
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(name)
    return tuple(versions)
