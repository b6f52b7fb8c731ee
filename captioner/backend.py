"""The caption model behind a small protocol: BLIP via transformers, loaded with from_pretrained."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image
from transformers import StoppingCriteriaList

from imagewire_serving.device import dtype_name

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings; requests with equal options can share a batch."""

    max_new_tokens: int
    num_beams: int


class CaptionBackend(Protocol):
    """A loaded caption model. ``generate`` is blocking and runs on the engine's device worker thread."""

    model_id: str
    family: str
    device: torch.device
    dtype: torch.dtype

    def token_budget(self, prompt: str) -> int:
        """How many new tokens fit after ``prompt`` in the model's text length."""
        ...

    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        options: GenerationOptions,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[str]:
        """One caption per image, in order; prompts[i] is image i's caption prefix ("" for none).

        ``should_stop`` is polled between decoding steps; when it returns True the batch's callers are all gone
        and generation ends early (the partial captions are discarded by the caller).
        """
        ...


class _StopWhen:
    """A transformers stopping criterion that ends generation for every row when a predicate turns True."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self._predicate = predicate

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self._predicate(), dtype=torch.bool, device=input_ids.device)


class BlipBackend:
    """BlipForConditionalGeneration + BlipProcessor from a local directory or a hub id."""

    family = "blip"

    def __init__(self, model_id: str, model: torch.nn.Module, processor: object, device: torch.device) -> None:
        self.model_id = model_id
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype: torch.dtype = next(model.parameters()).dtype

    @classmethod
    def load(cls, source: str, device: torch.device, dtype: torch.dtype, *, model_id: str | None = None) -> BlipBackend:
        """Load through from_pretrained (a directory, or a hub id resolved by the hub's cache and network)."""
        from transformers import BlipForConditionalGeneration, BlipProcessor

        processor = BlipProcessor.from_pretrained(source)
        model = BlipForConditionalGeneration.from_pretrained(source, dtype=dtype).to(device).eval()
        _LOGGER.info("loaded caption model %s on %s (%s)", source, device, dtype_name(dtype))
        return cls(model_id or source, model, processor, device)

    def token_budget(self, prompt: str) -> int:
        # Generation starts from the prompt's tokens less the trailing [SEP] (or from BOS alone) and may not run
        # past the position table: beyond it the decoder fails with an index error.
        positions: int = self.model.config.text_config.max_position_embeddings  # type: ignore[union-attr]
        start = len(self.processor.tokenizer(prompt).input_ids) - 1 if prompt else 1  # type: ignore[attr-defined]
        return positions - start

    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        options: GenerationOptions,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[str]:
        captions: list[str] = [""] * len(images)
        # BLIP's conditional generate drops the last prompt token (the [SEP]) of every row, which is only right
        # when rows are unpadded: run one generate call per distinct prompt.
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(index)
        for prompt, indices in groups.items():
            if should_stop is not None and should_stop():
                break
            texts = self._generate_group([images[i] for i in indices], prompt, options, should_stop)
            for index, text in zip(indices, texts):
                captions[index] = text
        return captions

    @torch.inference_mode()
    def _generate_group(
        self,
        images: list[Image.Image],
        prompt: str,
        options: GenerationOptions,
        should_stop: Callable[[], bool] | None,
    ) -> list[str]:
        processor = self.processor
        if prompt:
            inputs = processor(images=images, text=[prompt] * len(images), return_tensors="pt")  # type: ignore[operator]
        else:
            inputs = processor(images=images, return_tensors="pt")  # type: ignore[operator]
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        stopping = StoppingCriteriaList([_StopWhen(should_stop)]) if should_stop is not None else None
        output = self.model.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            do_sample=False,
            stopping_criteria=stopping,
        )
        texts = processor.batch_decode(output, skip_special_tokens=True)  # type: ignore[attr-defined]
        return [" ".join(text.split()) for text in texts]
