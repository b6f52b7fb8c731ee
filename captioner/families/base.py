"""What every caption family shares: a transformers image-text-to-text model and its processor, run in batches.

A family subclasses :class:`Captioner` and says only what differs: how a batch's inputs are built (a task prompt,
a chat template, where a caption prefix goes), how many tokens a prompt takes, how the output is decoded, which
request fields it uses. Generation itself (options, cancellation, devices and dtypes) is written once here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image
from transformers import StoppingCriteriaList

from captioner.backend import GenerationOptions, generation_defaults
from imagewire_serving.compiling import Part
from imagewire_serving.memory import tensor_bytes
from imagewire_serving.provenance import ModelFiles

# Every CaptionRequest field a model may use (model_id aside, which picks the model).
ALL_FIELDS = frozenset({"image", "prompt", "max_new_tokens", "num_beams"})
# Where the families keep their image encoder (BLIP, Idefics3: vision_model; LLaVA, Florence-2: vision_tower;
# GIT: image_encoder), at the top of the model or one level down.
VISION_ENCODERS = ("vision_model", "vision_tower", "image_encoder")
DECODER_PART = "text decoder"
# The shortest static KV cache: the default caption (20 tokens after a short prompt) fits it.
MIN_CACHE_LENGTH = 32


class _StopWhen:
    """A transformers stopping criterion that ends generation for every row when a predicate turns True."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self._predicate = predicate

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self._predicate(), dtype=torch.bool, device=input_ids.device)


class Captioner:
    """One loaded model of a caption family: implements :class:`captioner.backend.CaptionBackend`.

    Subclasses set ``family`` and ``model_types`` (the config ``model_type`` values they serve) and implement
    :meth:`inputs` and :meth:`start_tokens`; they may narrow ``fields_used`` and override :meth:`decode`.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    fields_used: ClassVar[frozenset[str]] = ALL_FIELDS
    # The model's attribute holding the text decoder, in families that implement :meth:`static_cache`.
    decoder: ClassVar[str | None] = None


    def __init__(self, model_id: str, model: Any, processor: Any, device: torch.device, files: ModelFiles) -> None:
        self.model_id = model_id
        self.files = files
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.dtype: torch.dtype = next(model.parameters()).dtype
        # The decoder's position table: generation may not run past it (beyond, it fails with an index error).
        self.text_positions = int(model.config.get_text_config(decoder=True).max_position_embeddings)

    def compile_parts(self) -> list[Part]:
        """The vision encoder (it runs once per image on the whole image, the bulk of a caption's arithmetic) and,
        in families that can run it over a static KV cache (:meth:`static_cache`), the text decoder: compiled, its
        one-token steps have fixed shapes (a prompt's first pass, of any length, runs eagerly)."""
        return self._parts

    def weight_bytes(self) -> int:
        return tensor_bytes(self.model)

    @functools.cached_property
    def _parts(self) -> list[Part]:
        parts = [Part("vision encoder", module, batch_dim=True) for name, module in self.model.named_modules()
                 if name.count(".") <= 1 and name.rsplit(".", 1)[-1] in VISION_ENCODERS][:1]
        if self.decoder is not None:
            parts.append(Part(DECODER_PART, getattr(self.model, self.decoder), batch_dim=True,
                              runs_compiled=_one_token_step))
        return parts

    def _decoder_compiled(self, rows: int) -> bool:
        return any(part.name == DECODER_PART and part.runs_compiled_for(rows) for part in self._parts)

    @functools.cached_property
    def defaults(self) -> GenerationOptions:
        """What the model's generation config asks for (read once a subclass has set itself up)."""
        return generation_defaults(self.model.generation_config, self.start_tokens(""))

    # ------------------------------------------------------------------------------------- what a family says

    def inputs(self, images: list[Image.Image], prompts: list[str]) -> dict[str, torch.Tensor]:
        """The keyword arguments of one ``generate`` for the batch (on the CPU; moved to the device here)."""
        raise NotImplementedError

    def start_tokens(self, prompt: str) -> int:
        """The positions a row with ``prompt`` takes before its first new token (the most any image needs)."""
        raise NotImplementedError

    def static_cache(self, rows: int, positions: int) -> Any:
        """A KV cache of fixed shape for ``rows`` rows of up to ``positions`` tokens, for ``generate`` (families
        that name a ``decoder``)."""
        raise NotImplementedError

    def decode(self, output: torch.Tensor, inputs: dict[str, torch.Tensor], prompts: list[str]) -> list[str]:
        """Each row's caption, the prompt prefix included. By default: the whole output row, special tokens
        (start, padding, end) left out, which is right where the output repeats the prefix."""
        return list(self.tokenizer.batch_decode(output, skip_special_tokens=True))

    # ------------------------------------------------------------------------------------ what all share

    def token_budget(self, prompt: str) -> int:
        return self.text_positions - self.start_tokens(prompt)

    @torch.inference_mode()
    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        options: GenerationOptions,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[str]:
        """One caption per image from one ``generate`` for the whole batch, prompts mixed."""
        prompts = list(prompts)
        inputs = self.inputs(list(images), prompts)
        stopping = StoppingCriteriaList([_StopWhen(should_stop)]) if should_stop is not None else None
        rows = len(prompts) * options.num_beams
        if self._decoder_compiled(rows):
            # The compiled decoder's steps run over a static cache: its length is bucketed, so few graphs serve
            # every prompt and caption length.
            width = inputs["input_ids"].shape[1] if "input_ids" in inputs else 1
            inputs = {**inputs, "cache": self.static_cache(rows, cache_length(width + options.max_new_tokens,
                                                                               self.text_positions))}
        output = self.model.generate(
            **self._on_device(inputs),
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            # Captions are deterministic whatever the generation config says: a request's caption must not
            # depend on the batch it ran in.
            do_sample=False,
            stopping_criteria=stopping,
        )
        return [" ".join(text.split()) for text in self.decode(output.cpu(), inputs, prompts)]

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """The images as the model's image processor prepares them."""
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def _on_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # Pixels take the weights' dtype; ids and masks keep theirs; a cache is made on the device.
        return {name: (value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device))
                if isinstance(value, torch.Tensor) else value for name, value in inputs.items()}


def _one_token_step(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A decoder call for one new token per row (a prompt's first pass, of any length, runs eagerly)."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    return isinstance(ids, torch.Tensor) and ids.shape[-1] == 1


def cache_length(positions: int, limit: int) -> int:
    """The static cache's length for ``positions`` tokens: the next power of two from 32, within ``limit``."""
    return min(limit, max(MIN_CACHE_LENGTH, 1 << (positions - 1).bit_length()))


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as one left-padded batch (ids, attention mask): each row's last token sits
    in the last column, where generation continues it, and the mask hides the padding."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            ids[index, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[index, width - len(row):] = 1
    return ids, mask
