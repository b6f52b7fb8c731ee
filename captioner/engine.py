"""The caption engine: validation, per-model dynamic batching on one device worker, deadlines, cancellation.

Pure typed Python: no grpc, no protobuf. Callers submit a :class:`CaptionInput` and await a
:class:`CaptionResult`; the engine raises the domain errors of :mod:`imagewire_serving.errors`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from captioner.backend import CaptionBackend, GenerationOptions
from captioner.batcher import Batcher, SmallCopy
from captioner.limits import MAX_PROMPT_CHARS, EngineLimits
from imagewire_serving import errors, tracing
from imagewire_serving.compiling import compiled_for
from imagewire_serving.device import dtype_name
from imagewire_serving.engine import DeviceEngine
from imagewire_serving.engine import ModelCard as BaseCard
from imagewire_serving.errors import FieldViolation
from imagewire_serving.fields import RequestField, check_fields, unused_field
from imagewire_serving.images import SOURCE_SIZE, decode_image
from imagewire_serving.metrics import Metrics
from imagewire_serving.provenance import Provenance


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
    # The model's provenance key.
    provenance_key: str


@dataclass(frozen=True)
class BatchRange:
    """Batch sizes ``first_batch_size``..``last_batch_size``, the dtype of the copy of the weights that runs them,
    their provenance key and the parts compiled for them (the contract's BatchRange)."""

    first_batch_size: int
    last_batch_size: int
    dtype: str
    provenance_key: str
    compiled_parts: tuple[str, ...]


@dataclass(frozen=True)
class ModelCard(BaseCard):
    """What ListModels says of one loaded caption model (the names of the contract's ModelInfo fields)."""

    max_image_pixels: int
    default_max_new_tokens: int
    max_new_tokens_limit: int
    default_num_beams: int
    num_beams_limit: int
    max_batch_size: int
    usd_per_input_pixel: float
    batch_ranges: tuple[BatchRange, ...]


class CaptionEngine(DeviceEngine[CaptionBackend, ModelCard]):
    """Captions images with one or more loaded models sharing one device worker thread.

    ``caption`` validates, decodes the image off the event loop, queues the request on its model's batcher and
    returns its own caption. ``small``: per model, a second copy of its weights that runs its small batches.
    """

    libraries = ("imagewire", "torch", "transformers", "tokenizers", "pillow")

    def __init__(self, backends: Sequence[CaptionBackend], limits: EngineLimits, metrics: Metrics,
                 small: Mapping[str, SmallCopy] | None = None) -> None:
        super().__init__(backends, device_thread="caption-device")
        self.limits = limits
        small = small or {}
        self._batchers = {b.model_id: Batcher(b, self.run_on_device, limits, metrics, self.stats,
                                              small.get(b.model_id)) for b in backends}
        # Per model, its batch sizes by how they run (the copy of the weights, the parts compiled for them): a
        # caption names the provenance of the range that computed it.
        self._ranges = {b.model_id: self._group_batch_sizes(b.model_id) for b in backends}
        # Each model's fields: the max_new_tokens bound is the operator's limit lowered to what the model's text
        # length leaves after an empty prompt, the defaults the operator's or the model's generation config's.
        # Computed once; requests, defaults and ListModels all use them.
        self._fields = {b.model_id: request_fields(limits, b) for b in backends}

    def batcher(self, model_id: str) -> Batcher:
        """The batcher of ``model_id`` ("" for the default), or NotFound."""
        return self._batchers[self.model(model_id).model_id]

    @property
    def queue_depth(self) -> int:
        return sum(batcher.queue_depth for batcher in self._batchers.values())

    def start(self) -> None:
        for batcher in self._batchers.values():
            batcher.start()

    async def _stop(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()

    async def caption(self, request: CaptionInput, *, deadline: float | None = None) -> CaptionResult:
        """Caption one image. ``deadline`` is a time.monotonic() instant after which the work is dropped."""
        batcher = self.batcher(request.model_id)
        backend = batcher.backend
        fields = self._fields[backend.model_id]
        violations = option_violations(backend, fields, request)
        with tracing.span("caption.decode_image"):
            image, budget = await asyncio.to_thread(self._prepare, backend, request, violations)
        max_new_tokens = self._max_new_tokens(request, fields["max_new_tokens"], budget, violations)
        errors.collect(violations)
        assert image is not None
        num_beams = default_options(fields).num_beams if request.num_beams is None else request.num_beams
        options = GenerationOptions(max_new_tokens=max_new_tokens, num_beams=num_beams)
        done = await batcher.submit(image, request.prompt, options, deadline)
        computed = time.monotonic() - done.compute_s
        tracing.phase("caption.queue_wait", computed - done.queue_s, computed)
        tracing.phase("caption.batch", computed, computed + done.compute_s, batch_size=done.batch_size,
                      model=backend.model_id)
        pixels = math.prod(image.info.get(SOURCE_SIZE, image.size))  # as sent, before any reduction
        return CaptionResult(
            text=done.text, model_id=backend.model_id, input_pixels=pixels,
            usd_per_input_pixel=self.limits.usd_per_input_pixel, price_usd=pixels * self.limits.usd_per_input_pixel,
            batch_size=done.batch_size, queue_s=done.queue_s, compute_s=done.compute_s,
            provenance_key=self._range(backend.model_id, done.ran_in).provenance_key,
        )

    def _prepare(
        self, backend: CaptionBackend, request: CaptionInput, violations: list[FieldViolation]
    ) -> tuple[Image.Image | None, int]:
        """Off the event loop: decode the image and measure what the prompt leaves of the model's text length."""
        image = None
        try:
            image = decode_image(request.image, self.limits.image)
        except errors.InvalidArgument as error:
            violations[:0] = error.violations
        budget = int(self._fields[backend.model_id]["max_new_tokens"].maximum or 0)
        if request.prompt and len(request.prompt) <= MAX_PROMPT_CHARS:
            budget = min(budget, backend.token_budget(request.prompt))
        return image, budget

    def _max_new_tokens(self, request: CaptionInput, field: RequestField, budget: int,
                        violations: list[FieldViolation]) -> int:
        """The request's max_new_tokens, or the default lowered to what the prompt leaves."""
        if budget < 1:
            violations.append(FieldViolation("prompt", "fills the model's whole text length"))
            return 1
        if request.max_new_tokens is None:
            return min(int(field.default), budget)
        if not 1 <= request.max_new_tokens <= budget:
            why = " with this prompt" if request.prompt else ""
            violations.append(FieldViolation(
                "max_new_tokens", f"must be 1..{budget}{why}, not {request.max_new_tokens}"))
        return request.max_new_tokens

    def _warm_up_model(self, backend: CaptionBackend) -> None:
        # On a GPU, the largest batch of the default request, so that a card too small for it fails at start-up
        # rather than on the first callers; on the CPU one default caption pays for the lazy initialisation.
        # A second copy for small batches runs the largest of them too (its compiled parts are compiled by now).
        size = self.limits.max_batch_size if backend.device.type == "cuda" else 1
        options = default_options(self._fields[backend.model_id])
        default_request(backend, options, size)
        small = self._batchers[backend.model_id].small
        if small is not None:
            default_request(small.backend, options, min(size, small.largest))

    def batch_ranges(self, model_id: str) -> tuple[BatchRange, ...]:
        """The batch sizes the model runs, by how they run (the copy of the weights, its dtype, the parts compiled
        for them), the largest batches first."""
        return self._ranges[model_id]

    def _range(self, model_id: str, batch_size: int) -> BatchRange:
        return next(r for r in self._ranges[model_id] if r.first_batch_size <= batch_size <= r.last_batch_size)

    def _group_batch_sizes(self, model_id: str) -> tuple[BatchRange, ...]:
        batcher = self._batchers[model_id]
        ranges: list[BatchRange] = []
        for size in range(self.limits.max_batch_size, 0, -1):
            copy = batcher.copy_for(size)
            compiled = compiled_for(copy.compile_parts(), size)
            if ranges and (ranges[-1].dtype, ranges[-1].compiled_parts) == (dtype_name(copy.dtype), compiled):
                ranges[-1] = dataclasses.replace(ranges[-1], first_batch_size=size)
                continue
            ranges.append(BatchRange(size, size, dtype_name(copy.dtype), Provenance.of(copy, self.libraries, size).key,
                                     compiled))
        return tuple(ranges)

    def _card(self, backend: CaptionBackend) -> ModelCard:
        limits, fields = self.limits, self._fields[backend.model_id]
        return ModelCard(
            **self._card_basics(backend, fields.values()), max_image_pixels=limits.image.max_pixels,
            default_max_new_tokens=fields["max_new_tokens"].default,
            max_new_tokens_limit=int(fields["max_new_tokens"].maximum or 0),
            default_num_beams=default_options(fields).num_beams, num_beams_limit=limits.num_beams_limit,
            max_batch_size=limits.max_batch_size, usd_per_input_pixel=limits.usd_per_input_pixel,
            batch_ranges=self.batch_ranges(backend.model_id),
        )


def request_fields(limits: EngineLimits, backend: CaptionBackend) -> dict[str, RequestField]:
    """Every request field a caption model uses, with its default and bounds: what is validated and reported.

    Only the fields the model's family uses are listed (a set field outside them is rejected). The max_new_tokens
    bound is the operator's limit lowered to what the model's text length leaves after an empty prompt (a prompt
    lowers it further per request); the defaults are the operator's, else the model's.
    """
    token_limit = min(limits.max_new_tokens_limit, backend.token_budget(""))
    max_new_tokens = limits.default_max_new_tokens or backend.defaults.max_new_tokens
    num_beams = limits.default_num_beams or backend.defaults.num_beams
    fields = (
        RequestField("image", None, 1, limits.image.max_bytes),
        RequestField("prompt", "", 0, MAX_PROMPT_CHARS),
        RequestField("max_new_tokens", min(max_new_tokens, token_limit), 1, token_limit),
        RequestField("num_beams", min(num_beams, limits.num_beams_limit), 1, limits.num_beams_limit),
    )
    return {field.name: field for field in fields if field.name in backend.fields_used}


def option_violations(backend: CaptionBackend, fields: dict[str, RequestField], request: CaptionInput
                      ) -> list[FieldViolation]:
    """What is wrong with the request's prompt and num_beams (max_new_tokens is checked against the prompt's
    token budget later), and every field set that the model does not use: never silently ignored."""
    options = {"prompt": request.prompt or None, "max_new_tokens": request.max_new_tokens,
               "num_beams": request.num_beams}
    violations = [unused_field(name, backend.model_id, backend.family)
                  for name, value in options.items() if value is not None and name not in fields]
    violations += check_fields(fields, [(name, options[name]) for name in ("prompt", "num_beams") if name in fields])
    if "prompt" in fields and not request.prompt.isprintable():
        violations.append(FieldViolation("prompt", "must be printable text"))
    return violations


def default_options(fields: dict[str, RequestField]) -> GenerationOptions:
    """The decoding of a request that leaves every option unset (greedy where the model takes no num_beams)."""
    beams = fields.get("num_beams")
    return GenerationOptions(max_new_tokens=int(fields["max_new_tokens"].default),
                             num_beams=int(beams.default) if beams is not None else 1)


def default_request(backend: CaptionBackend, options: GenerationOptions, batch_size: int = 1) -> None:
    """Caption ``batch_size`` blank images with ``options``: the warm-up, and what --dtype auto times."""
    blank = Image.new("RGB", (224, 224), (127, 127, 127))
    backend.generate([blank] * batch_size, [""] * batch_size, options)
