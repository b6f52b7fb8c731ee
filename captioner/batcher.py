"""Dynamic batching of one caption model's requests on the shared device worker."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from PIL import Image

from captioner.backend import CaptionBackend, GenerationOptions
from captioner.limits import EngineLimits
from imagewire_serving import errors
from imagewire_serving.device import dtype_name
from imagewire_serving.engine import EngineStats
from imagewire_serving.memory import releasing_memory
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

# What a caller whose caption ran out of device memory can change (the batch itself is the server's doing: a batch
# that runs out is retried in halves before anyone is told).
MEMORY_HINT = "retry with a smaller num_beams or max_new_tokens"
# How long a batch may wait for the callers the last batch answered, as a fraction of that batch's model time.
RETURN_WAIT_FRACTION = 0.25

T = TypeVar("T")


class RunOnDevice(Protocol):
    """The engine's ``run_on_device``: run a blocking model call on the device thread."""

    def __call__(self, function: Callable[..., T], *args: Any) -> Awaitable[T]: ...


@dataclass(frozen=True)
class SmallCopy:
    """A second copy of a model's weights, in another dtype, that runs the batches of up to ``largest`` requests
    (where the warm-up measured that dtype clearly faster for them: imagewire_serving.tuning)."""

    backend: CaptionBackend
    largest: int


@dataclass(frozen=True)
class Captioned:
    """One request's caption and how it was made (``ran_in``: the size of the batch that computed it, smaller than
    ``batch_size`` where a batch that ran out of device memory was split)."""

    text: str
    batch_size: int
    queue_s: float
    compute_s: float
    ran_in: int


@dataclass
class _Pending:
    image: Image.Image
    prompt: str
    options: GenerationOptions
    future: asyncio.Future[Captioned]
    deadline: float | None
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers compatible queued requests of one model into batches and runs them on the device worker.

    Compatible means equal generation options; prompts may differ. The first waiting request opens a batch,
    which closes when it holds ``max_batch_size`` requests or ``max_batch_delay_ms`` has passed. The window is
    only waited for when there is evidence of concurrent callers (the last batch held several, one arrived while
    the model was busy, or several are waiting): a lone caller would wait it out for nothing.

    Past the window, a batch still waits for the callers the last batch answered (up to RETURN_WAIT_FRACTION of
    its model time): callers in a closed loop send their next request within milliseconds, but not all within a
    5 ms window, and a batch closed without them splits the load into two batches that alternate from then on
    (5 and 11 at 16 callers), each paying the whole per-batch cost. Requests whose caller left or whose deadline
    passed are dropped before they reach the model.

    A batch of up to ``small.largest`` requests runs on the ``small`` copy of the weights, when there is one.
    """

    def __init__(self, backend: CaptionBackend, run_on_device: RunOnDevice, limits: EngineLimits, metrics: Metrics,
                 stats: EngineStats, small: SmallCopy | None = None) -> None:
        self.backend = backend
        self.small = small
        self._run_on_device = run_on_device
        self._limits = limits
        self._metrics = metrics
        self._stats = stats
        self._pending: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._arrived_while_busy = False
        self._last_batch_size = 0
        # Requests the next batch can expect: those queued when the last batch ended plus the callers it answered.
        self._expected = 0
        self._last_compute_s = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name=f"batcher:{self.backend.model_id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(errors.Unavailable("the server is shutting down"))
        self._pending.clear()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (including callers that left and are not yet swept out)."""
        return len(self._pending)

    async def submit(
        self, image: Image.Image, prompt: str, options: GenerationOptions, deadline: float | None
    ) -> Captioned:
        """Queue one request and wait for its caption."""
        if len(self._pending) >= self._limits.max_queue:
            # Callers who left still hold their slots until the next batch forms: only the living count.
            self._pending = collections.deque(item for item in self._pending if not item.future.done())
        if len(self._pending) >= self._limits.max_queue:
            raise errors.Overloaded(f"the queue of {self.backend.model_id} is full ({self._limits.max_queue} waiting)")
        future: asyncio.Future[Captioned] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(image, prompt, options, future, deadline))
        self._arrived_while_busy |= self._busy
        self._metrics.queue_depth.labels(self.backend.model_id).set(len(self._pending))
        self._arrived.set()
        try:
            return await future
        finally:
            # A caller that left (cancelled task) marks its slot so the worker skips it.
            future.cancel()

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._gather()
            if batch:
                await self._run(batch)

    async def _gather(self) -> list[_Pending]:
        options = self._pending[0].options
        concurrent = self._last_batch_size > 1 or self._arrived_while_busy or self._count(options) > 1
        opened = time.monotonic()
        window = self._limits.max_batch_delay_ms / 1000 if concurrent else 0.0
        close_at = opened + window
        patience = opened + max(window, RETURN_WAIT_FRACTION * self._last_compute_s) if concurrent else close_at
        while (count := self._count(options)) < self._limits.max_batch_size:
            now = time.monotonic()
            if now >= close_at and (count >= self._expected or now >= patience):
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), (close_at if now < close_at else patience) - now)
            except TimeoutError:
                continue  # the loop decides whether to wait on
        return self._take(options)

    def _take(self, options: GenerationOptions) -> list[_Pending]:
        """Remove the batch from the queue, dropping callers who left and failing expired deadlines."""
        batch: list[_Pending] = []
        kept: collections.deque[_Pending] = collections.deque()
        now = time.monotonic()
        for item in self._pending:
            if item.future.done():
                continue  # the caller is gone
            if item.deadline is not None and now >= item.deadline:
                item.future.set_exception(errors.DeadlineExceeded("the deadline passed while the request was queued"))
            elif item.options == options and len(batch) < self._limits.max_batch_size:
                batch.append(item)
            else:
                kept.append(item)
        self._pending = kept
        self._metrics.queue_depth.labels(self.backend.model_id).set(len(kept))
        return batch

    def _count(self, options: GenerationOptions) -> int:
        return sum(1 for item in self._pending if item.options == options and not item.future.done())

    async def _run(self, batch: list[_Pending]) -> None:
        model_id = self.backend.model_id
        started = time.monotonic()
        for item in batch:
            self._metrics.queue_duration.labels(model_id).observe(started - item.enqueued)
        self._metrics.batch_size.labels(model_id).observe(len(batch))
        self._busy, self._arrived_while_busy, self._last_batch_size = True, False, len(batch)
        self._stats.runs_started += 1

        def should_stop() -> bool:
            # Polled from the device thread once per decoding step; a future's done() only reads its state.
            self._stats.steps += 1
            return all(item.future.done() for item in batch)

        try:
            captions = await self._generate(batch, should_stop)
        except Exception as error:  # a model failure fails this batch, not the worker
            _LOGGER.exception("caption batch of %d failed on %s", len(batch), model_id)
            self._stats.runs_failed += 1
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            self._busy = False
            self._last_compute_s = time.monotonic() - started
            self._expected = min(self._limits.max_batch_size, len(batch) + len(self._pending))
        self._finish(batch, captions, started)

    def copy_for(self, batch_size: int) -> CaptionBackend:
        """The copy of the weights that runs a batch of ``batch_size``."""
        small = self.small
        return small.backend if small is not None and batch_size <= small.largest else self.backend

    async def _generate(self, batch: list[_Pending], should_stop: Callable[[], bool]) -> list[tuple[str, int]]:
        """The batch's captions, each with the size of the batch that computed it; a batch that runs out of device
        memory is retried in two halves, one after the other, down to single requests (whose OutOfMemory then
        reaches their callers)."""
        backend = self.copy_for(len(batch))
        dtype = dtype_name(backend.dtype)
        self._metrics.caption_batches.labels(backend.model_id, dtype).inc()
        generate = releasing_memory(backend.generate, backend.device, MEMORY_HINT)
        try:
            captions = await self._run_on_device(generate, [item.image for item in batch],
                                                 [item.prompt for item in batch], batch[0].options, should_stop)
            return [(caption, len(batch)) for caption in captions]
        except errors.OutOfMemory:
            if len(batch) == 1:
                raise
        half = len(batch) // 2
        _LOGGER.warning("a caption batch of %d ran out of device memory; retrying as %d + %d", len(batch), half,
                        len(batch) - half)
        return await self._generate(batch[:half], should_stop) + await self._generate(batch[half:], should_stop)

    def _finish(self, batch: list[_Pending], captions: list[tuple[str, int]], started: float) -> None:
        compute = time.monotonic() - started
        self._metrics.compute_duration.labels(self.backend.model_id).observe(compute)
        if all(item.future.done() for item in batch):
            self._stats.runs_stopped += 1  # every caller left; generation stopped at the next step
            return
        self._stats.runs_completed += 1
        for item, (caption, ran_in) in zip(batch, captions):
            if not item.future.done():
                self._stats.requests_completed += 1
                item.future.set_result(Captioned(caption, len(batch), started - item.enqueued, compute, ran_in))
