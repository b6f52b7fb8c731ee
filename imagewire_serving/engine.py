"""The engine skeleton both services share: one device worker, the model table, start/close/warm-up, stats.

A service's engine extends :class:`DeviceEngine` with only what differs: how a request is validated and queued
(batching for captions, a generation queue for videos), what one model run does, and how a model is described to
clients. Pure typed Python: no grpc, no protobuf.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from imagewire_serving import errors
from imagewire_serving.compiling import compiled_for
from imagewire_serving.device import dtype_name
from imagewire_serving.fields import RequestField
from imagewire_serving.provenance import ModelFiles, Provenance

if TYPE_CHECKING:
    import torch

    from imagewire_serving.compiling import Part

T = TypeVar("T")


class Backend(Protocol):
    """What the engine needs of every loaded model, whatever its kind."""

    @property
    def model_id(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def compile_parts(self) -> Sequence[Part]:
        """The modules worth compiling (the same objects every call): imagewire_serving.compiling."""
        ...
    # The identity of the files it was loaded from (imagewire_serving.provenance.model_files).
    @property
    def files(self) -> ModelFiles: ...


@dataclass(frozen=True)
class ModelCard:
    """What ListModels says of every loaded model, whatever its kind; each service's card adds its own fields.

    Field names are those of the contract's ModelInfo messages, so a servicer encodes a card field for field.
    """

    model_id: str
    device: str
    dtype: str
    max_image_bytes: int
    family: str
    # Every request field the model accepts, with its default and bounds (what validation enforces).
    fields: tuple[RequestField, ...]
    # The parts that run compiled, and how they and the dtype were chosen.
    compiled_parts: tuple[str, ...]
    choice: str
    # What its output depends on besides the request.
    provenance: Provenance


BackendT = TypeVar("BackendT", bound=Backend)
CardT = TypeVar("CardT", bound=ModelCard)


@dataclass
class EngineStats:
    """What the device worker has done, all models together: for tests, diagnostics and benchmarks.

    A *run* is one call of the model: a caption batch, or one video generation.
    """

    runs_started: int = 0
    runs_completed: int = 0
    # Stopped early because every caller left or the deadline passed.
    runs_stopped: int = 0
    runs_failed: int = 0
    requests_completed: int = 0
    # Model steps taken: decoded tokens of caption batches, denoising steps of videos.
    steps: int = 0


class DeviceEngine(Generic[BackendT, CardT]):
    """One or more loaded models sharing one device worker thread; the first model is the default.

    Subclasses implement :meth:`_warm_up_model` (one minimal run, on the device thread) and :meth:`_card` (a
    model's description for ListModels), name the ``libraries`` their output is computed with, and may extend
    :meth:`start` and :meth:`_stop` for their workers.
    """

    # The distributions whose versions a model's output depends on (its provenance).
    libraries: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(self, backends: Sequence[BackendT], *, device_thread: str) -> None:
        if not backends:
            raise ValueError("at least one model is needed")
        ids = [backend.model_id for backend in backends]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be distinct: {', '.join(ids)}")
        self._models = {backend.model_id: backend for backend in backends}
        # Decided once: what each model's output depends on, read from the loaded backend and this process.
        self.provenance = {backend.model_id: Provenance.of(backend, self.libraries) for backend in backends}
        self.default_model_id = ids[0]
        self.stats = EngineStats()
        # How each model's dtype and compiled parts were chosen (set by the App that loaded them).
        self.choices: dict[str, str] = {}
        # One thread: the device runs one batch or generation at a time, whichever model it belongs to.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=device_thread)

    @property
    def backends(self) -> list[BackendT]:
        return list(self._models.values())

    def model(self, model_id: str) -> BackendT:
        """The backend of ``model_id`` ("" for the default), or NotFound naming the loaded ones."""
        backend = self._models.get(model_id or self.default_model_id)
        if backend is None:
            raise errors.NotFound(
                f"model {errors.shown(model_id)} is not loaded; available: {', '.join(self._models)}")
        return backend

    async def run_on_device(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking model call on the device thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def start(self) -> None:
        """Start the background workers (called on the event loop that will serve requests)."""

    async def close(self) -> None:
        """Stop the workers, fail what is still queued, and release the device thread."""
        await self._stop()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def _stop(self) -> None:
        """Stop the subclass's workers; queued requests fail with Unavailable."""

    async def warm_up(self) -> None:
        """Run each model once so the first client does not pay for lazy initialisation."""
        for backend in self._models.values():
            await self.run_on_device(self._warm_up_model, backend)

    def _warm_up_model(self, backend: BackendT) -> None:
        raise NotImplementedError

    def describe(self) -> list[CardT]:
        """A plain description of every loaded model (defaults, limits, device), the default first."""
        return [self._card(backend) for backend in self._models.values()]

    def _card(self, backend: BackendT) -> CardT:
        raise NotImplementedError

    def _card_basics(self, backend: BackendT, fields: Iterable[RequestField]) -> dict[str, Any]:
        """The fields every card has, as keyword arguments for a service's card."""
        fields = tuple(fields)
        image = next(field for field in fields if field.name == "image")
        return {"model_id": backend.model_id, "device": str(backend.device), "dtype": dtype_name(backend.dtype),
                "max_image_bytes": int(image.maximum or 0), "family": backend.family, "fields": fields,
                "compiled_parts": compiled_for(backend.compile_parts()),
                "choice": self.choices.get(backend.model_id, ""), "provenance": self.provenance[backend.model_id]}
