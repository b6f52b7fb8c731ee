"""The caption engine: validation, per-model dynamic batching on one device worker, deadlines, cancellation.

Pure typed Python: no grpc, no protobuf. Callers submit a :class:`CaptionInput` and await a
:class:`CaptionResult`; the engine raises the domain errors of :mod:`imagewire_serving.errors`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from captioner.backend import CaptionBackend, GenerationOptions
from imagewire_serving import errors
from imagewire_serving.errors import FieldViolation
from imagewire_serving.images import ImageLimits, decode_image
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 512


@dataclass(frozen=True)
class EngineLimits:
    """Operator-set bounds and defaults."""

    image: ImageLimits = ImageLimits()
    default_max_new_tokens: int = 30
    max_new_tokens_limit: int = 128
    default_num_beams: int = 1
    num_beams_limit: int = 8
    max_batch_size: int = 16
    max_batch_delay_s: float = 0.005
    max_queue: int = 256
    usd_per_input_pixel: float = 2.5e-10


@dataclass(frozen=True)
class CaptionInput:
    """One caption request in plain values. None options take the engine's defaults."""

    image: bytes
    model_id: str = ""
    prompt: str = ""
    max_new_tokens: int | None = None
    num_beams: int | None = None


@dataclass(frozen=True)
class CaptionResult:
    """A caption, the model that made it, its usage and where the time went."""

    text: str
    model_id: str
    input_pixels: int
    usd_per_input_pixel: float
    price_usd: float
    batch_size: int
    queue_s: float
    compute_s: float


@dataclass
class _Pending:
    image: Image.Image
    prompt: str
    options: GenerationOptions
    future: asyncio.Future[tuple[str, int, float, float]]
    deadline: float | None
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers compatible queued requests of one model into batches and runs them on the device worker.

    Compatible means equal generation options; prompts may differ. The first waiting request opens a batch,
    which closes when it holds ``max_batch_size`` requests or ``max_batch_delay_s`` has passed. The window is
    only waited for when there is evidence of concurrent callers (the last batch held several, one arrived while
    the model was busy, or several are waiting): a lone caller would wait it out for nothing. Requests whose
    caller left or whose deadline passed are dropped before they reach the model.
    """

    def __init__(
        self,
        backend: CaptionBackend,
        executor: concurrent.futures.Executor,
        limits: EngineLimits,
        metrics: Metrics,
    ) -> None:
        self.backend = backend
        self._executor = executor
        self._limits = limits
        self._metrics = metrics
        self._pending: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._arrived_while_busy = False
        self._last_batch_size = 0
        self.batches_run = 0
        self.requests_run = 0
        # Batches whose callers all left mid-generation, stopped at the next decoding step.
        self.batches_abandoned = 0

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
    def depth(self) -> int:
        return len(self._pending)

    async def submit(
        self, image: Image.Image, prompt: str, options: GenerationOptions, deadline: float | None
    ) -> tuple[str, int, float, float]:
        """Queue one request; returns (caption, batch size, queue seconds, compute seconds)."""
        if len(self._pending) >= self._limits.max_queue:
            # Callers who left still hold their slots until the next batch forms: only the living count.
            self._pending = collections.deque(item for item in self._pending if not item.future.done())
        if len(self._pending) >= self._limits.max_queue:
            raise errors.Overloaded(f"the queue of {self.backend.model_id} is full ({self._limits.max_queue} waiting)")
        future: asyncio.Future[tuple[str, int, float, float]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(image, prompt, options, future, deadline))
        self._arrived_while_busy |= self._busy
        self._metrics.set_queue_depth(self.backend.model_id, len(self._pending))
        self._arrived.set()
        try:
            return await future
        finally:
            # A caller that left (cancelled task) marks its slot so the worker skips it.
            future.cancel()

    async def _work(self) -> None:
        while True:
            await self._next_arrival()
            batch = await self._gather()
            if batch:
                await self._run(batch)

    async def _next_arrival(self) -> None:
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()

    async def _gather(self) -> list[_Pending]:
        options = self._pending[0].options
        concurrent = self._last_batch_size > 1 or self._arrived_while_busy or self._count(options) > 1
        close_at = time.monotonic() + (self._limits.max_batch_delay_s if concurrent else 0.0)
        while self._count(options) < self._limits.max_batch_size:
            remaining = close_at - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
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
        self._metrics.set_queue_depth(self.backend.model_id, len(kept))
        return batch

    def _count(self, options: GenerationOptions) -> int:
        return sum(1 for item in self._pending if item.options == options and not item.future.done())

    async def _run(self, batch: list[_Pending]) -> None:
        model_id = self.backend.model_id
        started = time.monotonic()
        for item in batch:
            self._metrics.observe_queue(model_id, started - item.enqueued)
        self._metrics.observe_batch(model_id, len(batch))
        loop = asyncio.get_running_loop()
        self._busy, self._arrived_while_busy, self._last_batch_size = True, False, len(batch)

        def everyone_left() -> bool:
            # Polled from the device thread: a future's done() only reads its state.
            return all(item.future.done() for item in batch)

        try:
            captions = await loop.run_in_executor(
                self._executor,
                self.backend.generate,
                [item.image for item in batch],
                [item.prompt for item in batch],
                batch[0].options,
                everyone_left,
            )
        except Exception as error:  # a model failure fails this batch, not the worker
            _LOGGER.exception("caption batch of %d failed on %s", len(batch), model_id)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            self._busy = False
        compute = time.monotonic() - started
        self._metrics.observe_compute(model_id, compute)
        if everyone_left():
            self.batches_abandoned += 1
            return
        self.batches_run += 1
        self.requests_run += len(batch)
        for item, caption in zip(batch, captions):
            if not item.future.done():
                item.future.set_result((caption, len(batch), started - item.enqueued, compute))


class CaptionEngine:
    """Captions images with one or more loaded models sharing one device worker thread.

    The first model is the default. ``caption`` validates, decodes the image off the event loop, queues the
    request on its model's batcher and returns its own caption.
    """

    def __init__(self, backends: Sequence[CaptionBackend], limits: EngineLimits, metrics: Metrics) -> None:
        if not backends:
            raise ValueError("at least one model is needed")
        self.limits = limits
        # One thread: the device runs one batch at a time, whichever model it belongs to.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-device")
        self._batchers = {b.model_id: Batcher(b, self._executor, limits, metrics) for b in backends}
        self.default_model_id = backends[0].model_id

    @property
    def backends(self) -> list[CaptionBackend]:
        return [batcher.backend for batcher in self._batchers.values()]

    def batcher(self, model_id: str) -> Batcher:
        batcher = self._batchers.get(model_id or self.default_model_id)
        if batcher is None:
            raise errors.NotFound(f"model {model_id!r} is not loaded; available: {', '.join(self._batchers)}")
        return batcher

    def start(self) -> None:
        for batcher in self._batchers.values():
            batcher.start()

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def options(self, request: CaptionInput) -> GenerationOptions:
        """Resolve and validate the generation options, naming every bad field at once."""
        limits = self.limits
        max_new_tokens = limits.default_max_new_tokens if request.max_new_tokens is None else request.max_new_tokens
        num_beams = limits.default_num_beams if request.num_beams is None else request.num_beams
        violations: list[FieldViolation] = []
        if not 1 <= max_new_tokens <= limits.max_new_tokens_limit:
            violations.append(FieldViolation("max_new_tokens", f"must be 1..{limits.max_new_tokens_limit}"))
        if not 1 <= num_beams <= limits.num_beams_limit:
            violations.append(FieldViolation("num_beams", f"must be 1..{limits.num_beams_limit}"))
        if len(request.prompt) > MAX_PROMPT_CHARS:
            violations.append(FieldViolation("prompt", f"must be at most {MAX_PROMPT_CHARS} characters"))
        elif not request.prompt.isprintable():
            violations.append(FieldViolation("prompt", "must be printable text"))
        errors.collect(violations)
        return GenerationOptions(max_new_tokens=max_new_tokens, num_beams=num_beams)

    async def caption(self, request: CaptionInput, *, deadline: float | None = None) -> CaptionResult:
        """Caption one image. ``deadline`` is a time.monotonic() instant after which the work is dropped."""
        batcher = self.batcher(request.model_id)
        options = self.options(request)
        budget = batcher.backend.token_budget(request.prompt)
        if budget < 1:
            raise errors.InvalidArgument("the prompt fills the model's whole text length", field="prompt")
        if options.max_new_tokens > budget:
            raise errors.InvalidArgument(
                f"must be at most {budget} with this prompt (the model's text length)", field="max_new_tokens"
            )
        image = await asyncio.to_thread(decode_image, request.image, self.limits.image)
        pixels = image.width * image.height
        text, batch_size, queue_s, compute_s = await batcher.submit(image, request.prompt, options, deadline)
        return CaptionResult(
            text=text,
            model_id=batcher.backend.model_id,
            input_pixels=pixels,
            usd_per_input_pixel=self.limits.usd_per_input_pixel,
            price_usd=pixels * self.limits.usd_per_input_pixel,
            batch_size=batch_size,
            queue_s=queue_s,
            compute_s=compute_s,
        )

    async def warm_up(self) -> None:
        """Run one tiny request through every model so the first client does not pay for lazy initialisation."""
        blank = Image.new("RGB", (64, 64), (127, 127, 127))
        options = GenerationOptions(max_new_tokens=4, num_beams=1)
        loop = asyncio.get_running_loop()
        for batcher in self._batchers.values():
            await loop.run_in_executor(self._executor, batcher.backend.generate, [blank], [""], options)
