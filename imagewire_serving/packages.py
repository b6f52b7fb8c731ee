"""A compiled part's graphs as AOTInductor packages on disk: built once, loaded by every later start.

``torch.compile`` keeps inductor's code in its cache, but a restart still traces every graph again (dynamo, AOT
autograd) and, on the CPU, regenerates its code: inductor does not cache graphs whose frozen weights are prepacked
for oneDNN. An AOTInductor package (``torch.export`` then ``torch._inductor.aoti_compile_and_package``) holds the
compiled code and the frozen, prepacked weights together, and loads in milliseconds.

A :class:`Packaged` forward stands where ``torch.compile``'s would (:class:`imagewire_serving.compiling.Part`): each
call shape (its inputs' structure, dtypes and sizes, a batch of one or of several; constants such as a cache's
state included) gets a package, exported from the part's eager forward, frozen, and kept in
``COMPILE_CACHE/packages`` under a name digesting the call shape and the part's identity (its weights' bytes, the
torch version, the hardware). Calls of several rows share one package whose batch is dynamic. A call shape that
cannot be exported or packaged runs through the fallback (``torch.compile``), with one line saying why.

Each package holds a copy of its part's weights, so a cache that serves model after model grows without end:
:func:`trim` removes the packages unused the longest once their total passes a size (``--compile-cache-max-gb``).
A package's modification time is its last use (set when it is loaded), never its age alone: packages baked into
a container image keep the image's build time, and a start long after the build still finds them all.

Used on the CPU; CUDA keeps ``torch.compile`` with autotuning (not measured here: no GPU was lent).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, cast

import torch
import torch.utils._pytree as pytree

from imagewire_serving.package_calls import Loaded, call_shape, seen_key

_LOGGER = logging.getLogger(__name__)

# Bumped when what a package holds or how it is named changes: older packages are then never loaded.
FORMAT = 1
# Packages made in this process, by how ("built", "loaded"): the tests and the recompile metric read it.
MADE: Counter[str] = Counter()
_DIRECTORY: Path | None = None
# Calls remembered per part (a decoder sees one per batch size and caption length): a bound, not a working size.
_SEEN_LIMIT = 4096
_PREPARED: threading.Thread | None = None
# The packages this process built or loaded: never trimmed by it.
_IN_USE: set[Path] = set()
# Packages used this recently (by any process sharing the cache: a replica starting beside this one) are kept.
RECENT_S = 3600.0


def configure(directory: Path | None) -> None:
    """Where packages are kept (None: parts are not packaged, ``torch.compile`` serves them). Starts what every
    first package load waits for (inductor's import, and its probe of the CPU's vector instructions: a second of
    subprocesses) on a thread of its own, so that it overlaps the model's loading."""
    global _DIRECTORY, _PREPARED
    _DIRECTORY = directory
    if directory is not None and _PREPARED is None:
        _PREPARED = threading.Thread(target=_prepare, name="imagewire-packages-prepare", daemon=True)
        _PREPARED.start()


def _prepare() -> None:
    try:
        import torch._inductor.package  # noqa: F401
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        pick_vec_isa()  # cached for the process: the package loader asks it first
    except Exception as error:  # only a head start: the first load does it again and reports what fails
        _LOGGER.debug("preparing for packages: %s", error)


def directory() -> Path | None:
    return _DIRECTORY


def made() -> int:
    return sum(MADE.values())


class _Eager(torch.nn.Module):
    """The part's eager forward as a module of its own (the part's module has the compiled forward in its place),
    its signature the call's: positional inputs ``arg0``.., then the call's keyword arguments by name (export
    matches dynamic shapes to named parameters, not to ``**kwargs``)."""

    def __init__(self, module: torch.nn.Module, eager: Callable[..., Any], positional: int, names: list[str]
                 ) -> None:
        super().__init__()
        self.module = module

        def forward(*args: Any, **kwargs: Any) -> Any:
            return eager(*args, **kwargs)

        kinds = inspect.Parameter
        forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [kinds(f"arg{index}", kinds.POSITIONAL_ONLY) for index in range(positional)]
            + [kinds(name, kinds.KEYWORD_ONLY) for name in names])
        self.forward = forward


class Packaged:
    """A part's forward through AOTInductor packages, one per call shape; ``fallback`` serves the call shapes that
    cannot be packaged."""

    def __init__(self, name: str, module: torch.nn.Module, eager: Callable[..., Any], store: Path, *,
                 batch_of: Callable[[tuple[Any, ...], dict[str, Any]], int] | None,
                 fallback: Callable[[], Callable[..., Any]]) -> None:
        """``batch_of``: a call's batch (its inputs' first dimension), for a part whose calls of several rows
        share a package (None: every call shape has its own)."""
        self.name = name
        self._module = module
        self._eager = eager
        self._store = store
        self._batch_of = batch_of
        self._fallback = fallback
        self._identity: str | None = None
        self._runners: dict[str, Callable[..., Any]] = {}
        # The runner of each call seen, by a key hashed in microseconds (the call shape's text takes a tenth of a
        # millisecond to write: a decoder's step pays it on every token); a call with no such key writes the text.
        self._seen: dict[Hashable, Callable[..., Any]] = {}
        # Why packaging failed (export or inductor), once: every call shape from then on takes the fallback.
        self.failed: str | None = None
        _register_caches(module)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        batch = self._batch_of(args, kwargs) if self._batch_of is not None else None
        key = seen_key(spec, leaves, batch)
        runner = self._seen.get(key) if key is not None else None
        if runner is None:
            shape = call_shape(spec, leaves, batch)
            runner = self._runners.get(shape)
            if runner is None:
                runner = self._runners[shape] = self._runner(shape, args, kwargs, batch)
            if key is not None and len(self._seen) < _SEEN_LIMIT:
                self._seen[key] = runner
        if isinstance(runner, Loaded):
            return runner(spec, leaves, args, kwargs)
        return runner(*args, **kwargs)

    def _runner(self, shape: str, args: tuple[Any, ...], kwargs: dict[str, Any], batch: int | None
                ) -> Loaded | Callable[..., Any]:
        if self.failed is not None:
            return self._fallback()
        rows = "" if batch is None else " for 1 row" if batch == 1 else " for any rows"
        path = self._store / f"{self.identity()[:20]}-{_digest(shape.encode())[:20]}.pt2"
        started = time.perf_counter()
        if _PREPARED is not None:
            _PREPARED.join()
        how = "loaded" if path.exists() else "built"
        _IN_USE.add(path)
        if how == "loaded":
            _mark_used(path)
        try:
            if how == "built":
                self._build(path, args, kwargs, batch)
            runner = Loaded(torch._inductor.aoti_load_package(str(path)))
        except Exception as error:  # export or inductor could not: this call shape runs through the fallback
            from imagewire_serving.compiling import first_line

            if how == "loaded":
                path.unlink(missing_ok=True)  # unreadable (another torch build wrote it?): the next start rebuilds it
            self.failed = first_line(error)
            _LOGGER.warning("%s: cannot package (%s): compiling it with torch.compile", self.name, self.failed)
            return self._fallback()
        MADE[how] += 1
        _LOGGER.info("%s: package%s %s in %.1f s (%s)", self.name, rows, how, time.perf_counter() - started,
                     path.name)
        return runner

    def _build(self, path: Path, args: tuple[Any, ...], kwargs: dict[str, Any], batch: int | None) -> None:
        import torch._inductor.config as inductor_config

        # Exported outside inference mode (it traces through autograd's dispatch), from copies of the inputs.
        with torch.inference_mode(False), torch.no_grad():
            sample_args, sample_kwargs = pytree.tree_map_only(torch.Tensor, torch.clone, (args, kwargs))
            eager = _Eager(self._module, self._eager, len(sample_args), list(sample_kwargs))
            shapes = None
            if batch is not None and batch > 1:
                rows = torch.export.Dim("rows", min=2)
                shapes = _rows_dynamic([*sample_args, *sample_kwargs.values()], batch, rows)
            program = torch.export.export(eager, sample_args, sample_kwargs,
                                          dynamic_shapes=shapes, strict=False)
            self._store.mkdir(parents=True, exist_ok=True)
            descriptor, scratch = tempfile.mkstemp(dir=self._store, suffix=".partial.pt2")
            os.close(descriptor)
            try:
                with inductor_config.patch(freezing=True):
                    torch._inductor.aoti_compile_and_package(program, package_path=scratch)
                os.replace(scratch, path)  # whole or not at all: another replica may be building it too
            finally:
                Path(scratch).unlink(missing_ok=True)

    def identity(self) -> str:
        """What a package of this part depends on besides the call shape: its weights, torch and the hardware."""
        if self._identity is None:
            from imagewire_serving.provenance import device_kind

            digest = hashlib.sha256(f"{FORMAT} {torch.__version__} {device_kind(torch.device('cpu'))}".encode())
            for name, tensor in (*self._module.named_parameters(), *self._module.named_buffers()):
                data = tensor.detach().cpu().contiguous().reshape(-1)
                digest.update(f"{name} {data.dtype} {tuple(tensor.shape)}".encode())
                if data.numel():
                    digest.update(data.view(torch.uint8).numpy().data)  # its bytes, not copied
            self._identity = digest.hexdigest()
        return self._identity


def _rows_dynamic(value: Any, batch: int, rows: Any) -> Any:
    """torch.export's dynamic shapes for ``value``: the first dimension of every tensor of ``batch`` rows is
    ``rows``. A registered pytree node (a KV cache) is the list of its children's, as export flattens it."""
    if isinstance(value, torch.Tensor):
        return {0: rows} if value.dim() > 0 and value.shape[0] == batch else None
    if type(value) in (list, tuple):
        return type(value)(_rows_dynamic(item, batch, rows) for item in value)
    if type(value) is dict:
        return {key: _rows_dynamic(item, batch, rows) for key, item in value.items()}
    node = pytree.SUPPORTED_NODES.get(type(value))
    if node is not None:
        return [_rows_dynamic(child, batch, rows) for child in node.flatten_fn(value)[0]]
    return None


def _register_caches(module: torch.nn.Module) -> None:
    """transformers' KV caches as pytree nodes, so that a decoder's cache is an input like its tensors."""
    try:
        from transformers.exporters.exporter_dynamo import register_cache_pytrees_for_model
    except ImportError:  # no transformers (or one without its exporters): no caches to register
        return
    register_cache_pytrees_for_model(cast(Any, module))  # any module: its own module's cache classes too


def _mark_used(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache (baked into an image) keeps its times
        os.utime(path)


def trim(limit_bytes: int) -> list[Path]:
    """Remove the packages unused the longest until those in the cache total at most ``limit_bytes``; keep the ones
    this process uses and any used in the last ``RECENT_S`` (so the total may stay above the limit). Scratch files
    of builds that died (``*.partial.pt2``) go first once they are that old. Returns what was removed."""
    if _DIRECTORY is None or not _DIRECTORY.is_dir():
        return []
    found: list[tuple[float, int, Path]] = []
    for path in _DIRECTORY.glob("*.pt2"):
        with contextlib.suppress(OSError):  # removed by another process meanwhile
            status = path.stat()
            found.append((status.st_mtime, status.st_size, path))
    total = sum(size for _, size, _ in found)
    recent = time.time() - RECENT_S
    removed: list[Path] = []
    freed = 0
    # Oldest use first; a dead build's scratch file before any package.
    for used, size, path in sorted(found, key=lambda item: (not item[2].name.endswith(".partial.pt2"), item[0])):
        if total - freed <= limit_bytes:
            break
        if path in _IN_USE or used > recent:
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another replica trimmed it
            pass
        except OSError:  # a read-only cache (baked into an image): kept as it is
            continue
        freed += size
        removed.append(path)
    if total - freed > limit_bytes:
        _LOGGER.info("compile cache: packages total %.2f GB, over the limit of %.2f GB: the rest are in use or "
                     "were used in the last hour", (total - freed) / 1e9, limit_bytes / 1e9)
    if removed:
        _LOGGER.info("compile cache: removed %d packages unused the longest (%.2f GB) to keep to %.2f GB",
                     len(removed), freed / 1e9, limit_bytes / 1e9)
    return removed


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
