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


# transformers' own caption length when a model's generation config sets neither max_new_tokens nor max_length.
TRANSFORMERS_DEFAULT_NEW_TOKENS = 20


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings; requests with equal options can share a batch."""

    max_new_tokens: int
    num_beams: int


def generation_defaults(config: object) -> GenerationOptions:
    """The decoding a model's generation config asks for when a request says nothing, as plain ``generate`` does.

    ``max_new_tokens`` where the config sets it; else its ``max_length`` less the one start token a caption begins
    from; else transformers' default of 20 new tokens. ``num_beams`` where set, else greedy.
    """
    max_new_tokens = getattr(config, "max_new_tokens", None)
    max_length = getattr(config, "max_length", None)
    if max_new_tokens is None:
        max_new_tokens = max_length - 1 if max_length is not None else TRANSFORMERS_DEFAULT_NEW_TOKENS
    return GenerationOptions(max_new_tokens=max(1, int(max_new_tokens)),
                             num_beams=int(getattr(config, "num_beams", None) or 1))


class CaptionBackend(Protocol):
    """A loaded caption model. ``generate`` is blocking and runs on the engine's device worker thread."""

    model_id: str
    family: str
    device: torch.device
    dtype: torch.dtype
    # What the model's generation config asks for when a request leaves max_new_tokens or num_beams unset.
    defaults: GenerationOptions

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
        self.defaults = generation_defaults(model.generation_config)

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

    @torch.inference_mode()
    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        options: GenerationOptions,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[str]:
        inputs = self._inputs(images, prompts)
        stopping = StoppingCriteriaList([_StopWhen(should_stop)]) if should_stop is not None else None
        output = self.model.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            do_sample=False,
            stopping_criteria=stopping,
        )
        texts = self.processor.batch_decode(output, skip_special_tokens=True)  # type: ignore[attr-defined]
        return [" ".join(text.split()) for text in texts]

    def _inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pixels, and the prompts as one left-padded batch whose rows each start as BLIP's own generate starts one.

        BLIP's generate overwrites column 0 with its start token and drops the last column (the [SEP]), which is
        only right for unpadded rows. Left-padded, every row still ends in [SEP]; each row's own first token is
        made the start token here, and generate derives the positions from the attention mask. The captions are
        those of one call per prompt (tests/test_caption_batching.py checks it), in one call for the batch.
        """
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]  # type: ignore[operator]
        inputs = {"pixel_values": pixels.to(self.device, self.dtype)}
        if not any(prompts):
            return inputs  # generate starts every row from the start token
        config = self.model.config.text_config  # type: ignore[union-attr]
        tokenizer = self.processor.tokenizer  # type: ignore[attr-defined]
        rows = [list(tokenizer(prompt).input_ids) if prompt else [config.bos_token_id, config.sep_token_id]
                for prompt in prompts]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), config.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, width - len(row):] = torch.tensor([config.bos_token_id, *row[1:]])
            mask[index, width - len(row):] = 1
        inputs["input_ids"], inputs["attention_mask"] = ids.to(self.device), mask.to(self.device)
        return inputs
