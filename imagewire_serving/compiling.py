"""Compiled model parts: the modules a family names worth compiling, compiled by inductor before SERVING.

A family lists its heavy modules as :class:`Part` objects (the captioner's vision encoder and BLIP's text
decoder, the animator's denoiser and VAE decoder). Compiling a part replaces its ``forward`` in place, so the
model's own code keeps calling it and forward hooks (the clock that times it) still run around it. On the CPU each
call shape becomes an AOTInductor package kept in the compile cache, with frozen weights prepacked for oneDNN
(:mod:`imagewire_serving.packages`: a restart loads them), and ``torch.compile`` serves what cannot be packaged; on
CUDA ``torch.compile`` with ``max-autotune``. A part whose compilation fails goes back to eager with one line saying
why; it never stops the server.

Shapes: a part with a batch dimension marks it dynamic, so one graph serves every batch size above one (a batch of
one is always its own, specialised graph); the warm-up runs both before SERVING. Graphs compiled after the warm-up
(a shape it did not cover) are counted by :func:`compiled_graphs` and exported as a metric.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imagewire_serving import packages

_LOGGER = logging.getLogger(__name__)

COMPILE_MODES = ("auto", "on", "off")


@dataclass(eq=False)
class Part:
    """One module of a model that may run compiled: its name in logs and ListModels, and the module itself.

    ``batch_dim``: the inputs' first dimension is the batch (marked dynamic for every size above one).
    ``runs_compiled``: given a call's arguments, whether it takes the compiled forward (None: every call); the others
    run eagerly (a decoder compiles its one-token steps, not prompts of every length).
    ``up_to``: while compiled, the largest batch (the calls' first dimension) that runs compiled, larger ones eagerly
    (None: every batch): a part measured clearly faster compiled for lone requests only (imagewire_serving.tuning).
    """

    name: str
    module: torch.nn.Module
    batch_dim: bool = False
    runs_compiled: Callable[[tuple[Any, ...], dict[str, Any]], bool] | None = None
    compiled: bool = False
    up_to: int | None = None
    failed: str | None = None
    _eager: Callable[..., Any] | None = field(default=None, repr=False)
    _compiled: Callable[..., Any] | None = field(default=None, repr=False)
    _forward: Callable[..., Any] | None = field(default=None, repr=False)
    _hook: torch.utils.hooks.RemovableHandle | None = field(default=None, repr=False)

    def parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.module.parameters())

    def compile(self, device: torch.device) -> None:
        """Wrap the module's forward with its compiled form (compiled lazily, by the first call of each shape) and
        use it: on the CPU, where :func:`configure` named a compile cache, AOTInductor packages kept there
        (:mod:`imagewire_serving.packages`), with ``torch.compile`` for what cannot be packaged; else
        ``torch.compile``."""
        if self._compiled is None:
            eager = self._eager = self.module.forward
            compiled = functools.cache(lambda: torch.compile(eager, **compile_options(device)))
            store = packages.directory()
            if device.type == "cpu" and store is not None:
                self._compiled = packages.Packaged(self.name, self.module, eager, store, fallback=compiled,
                                                   batch_of=_batch_size if self.batch_dim else None)
            else:
                self._compiled = compiled()
            # The eager forward's signature stays visible (transformers' generate reads it to check its arguments).
            self._forward = functools.wraps(self._eager)(lambda *args, **kwargs: self._guarded(*args, **kwargs))
            if self.batch_dim:
                self._hook = self.module.register_forward_pre_hook(_mark_batch_dynamic, with_kwargs=True)
        self.use(compiled=True)

    def release(self) -> None:
        """Run eagerly for good: drop the compiled forms (on the CPU the loaded packages, each holding a copy of the
        part's weights), as for a part measured and left eager. :meth:`compile` starts again."""
        self.use(compiled=False)
        self._eager = self._compiled = self._forward = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def use(self, *, compiled: bool, up_to: int | None = None) -> None:
        """Run the compiled forward (when compiled and not failed; for batches up to ``up_to``) or the eager one."""
        forward = self._forward if compiled and self.failed is None else None
        if forward is not None:
            self.module.forward = forward  # an instance attribute, shadowing the method
        else:
            self.module.__dict__.pop("forward", None)
        self.compiled = forward is not None
        self.up_to = up_to if self.compiled else None

    def runs_compiled_for(self, batch: int | None) -> bool:
        """Whether a batch of ``batch`` (rows) takes the compiled forward (None: whether every batch does)."""
        return self.compiled and (self.up_to is None or (batch is not None and batch <= self.up_to))

    def _guarded(self, *args: Any, **kwargs: Any) -> Any:
        assert self._compiled is not None and self._eager is not None
        if (self.runs_compiled is not None and not self.runs_compiled(args, kwargs)) or \
                not self.runs_compiled_for(_batch_size(args, kwargs)):
            return self._eager(*args, **kwargs)
        try:
            return self._compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # a compiler's failure of any kind: this part runs eagerly
            if not _is_compile_error(error):
                raise
            # A backend's failure comes wrapped (BackendCompilerFailed): its cause is what the operator can act on.
            self.failed = first_line(getattr(error, "inner_exception", None) or error)
            _LOGGER.warning("%s: cannot compile (%s): running it eagerly", self.name, self.failed)
            self.use(compiled=False)
            return self._eager(*args, **kwargs)


def compiled_for(parts: Iterable[Part], batch: int | None = None) -> tuple[str, ...]:
    """The names of the parts that run compiled for a batch of ``batch`` (None: for every batch)."""
    return tuple(part.name for part in parts if part.runs_compiled_for(batch))


def compile_options(device: torch.device) -> dict[str, Any]:
    """torch.compile's options on ``device``: inductor, autotuned on CUDA (freezing is set by :func:`configure`)."""
    return {"mode": "max-autotune"} if device.type == "cuda" else {}


def _mark_batch_dynamic(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # A batch of one keeps its own specialised graph; every larger batch shares one graph dynamic in the batch.
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(value, 0)


# The keyword arguments that carry a call's batch, before any other tensor (a cache position is one-dimensional too).
_BATCH_INPUTS = ("input_ids", "pixel_values", "inputs_embeds")


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """A call's batch: the first dimension of its main input (the first positional tensor, else a keyword argument
    of _BATCH_INPUTS, else any tensor; 1 if it has none)."""
    named = [kwargs[name] for name in _BATCH_INPUTS if name in kwargs]
    for value in (*args, *named, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def _is_compile_error(error: BaseException) -> bool:
    """Raised by dynamo or inductor while compiling (not an error of the model's own code run eagerly)."""
    from torch._dynamo import exc

    return isinstance(error, exc.TorchDynamoException | exc.BackendCompilerFailed) or type(error).__module__.startswith(
        ("torch._dynamo", "torch._inductor"))


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def configure(cache_dir: Path, device: torch.device) -> None:
    """Inductor's settings for serving: frozen weights on the CPU, and its persistent caches in ``cache_dir`` (the
    FX-graph and AOT-autograd caches: a restart with the same model and settings reuses the compiled code)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Inductor reads the variable each time it looks for its cache, so setting it here (before compiling) works.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    if device.type == "cpu":
        inductor_config.freezing = True
    packages.configure(cache_dir / "packages" if device.type == "cpu" else None)


def compiled_graphs() -> int:
    """Graphs compiled in this process so far: dynamo's frames compiled successfully, and packages built or loaded."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"]) + packages.made()


class PartClock:
    """Seconds spent in each part's forward while it is attached (forward hooks; CUDA synchronised)."""

    def __init__(self, parts: Sequence[Part], device: torch.device) -> None:
        self.seconds: dict[str, float] = {part.name: 0.0 for part in parts}
        self._parts = parts
        self._sync = device.type == "cuda"
        self._started: dict[str, float] = {}

    @contextmanager
    def attached(self) -> Iterator[PartClock]:
        handles = []
        for part in self._parts:
            handles.append(part.module.register_forward_pre_hook(self._starter(part.name)))
            handles.append(part.module.register_forward_hook(self._stopper(part.name)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _starter(self, name: str) -> Callable[..., None]:
        def start(*_: Any) -> None:
            self._started[name] = self._now()
        return start

    def _stopper(self, name: str) -> Callable[..., None]:
        def stop(*_: Any) -> None:
            self.seconds[name] += self._now() - self._started.pop(name)
        return stop
