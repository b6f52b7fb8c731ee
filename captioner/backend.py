"""What the caption engine needs of a loaded model: a small protocol, the decoding options, their defaults.

The models themselves are transformers image-text-to-text models, one small class per family in
:mod:`captioner.families` (chosen from the checkpoint's config); the engine sees only this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from imagewire_serving.engine import Backend

# transformers' own caption length when a model's generation config sets neither max_new_tokens nor max_length.
TRANSFORMERS_DEFAULT_NEW_TOKENS = 20


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings; requests with equal options can share a batch."""

    max_new_tokens: int
    num_beams: int


def generation_defaults(config: object, start_tokens: int = 1) -> GenerationOptions:
    """The decoding a model's generation config asks for when a request says nothing, as plain ``generate`` does.

    ``max_new_tokens`` where the config sets it; else its ``max_length`` less the ``start_tokens`` a caption begins
    from (the start token of a captioner, the whole chat prompt of a vision-language model); else transformers'
    default of 20 new tokens. ``num_beams`` where set, else greedy.
    """
    max_new_tokens = getattr(config, "max_new_tokens", None)
    max_length = getattr(config, "max_length", None)
    if max_new_tokens is None:
        max_new_tokens = max_length - start_tokens if max_length is not None else TRANSFORMERS_DEFAULT_NEW_TOKENS
    return GenerationOptions(max_new_tokens=max(1, int(max_new_tokens)),
                             num_beams=int(getattr(config, "num_beams", None) or 1))


class CaptionBackend(Backend, Protocol):
    """A loaded caption model (its family is ListModels' ModelInfo.family, such as "blip" or "florence2").
    ``generate`` is blocking and runs on the engine's device worker thread."""

    # Read-only, so that a family's class attributes and properties satisfy them.
    @property
    def defaults(self) -> GenerationOptions:
        """What the model's generation config asks for when a request leaves max_new_tokens or num_beams unset."""
        ...

    @property
    def fields_used(self) -> frozenset[str]:
        """The CaptionRequest fields the model uses (besides model_id): setting any other is INVALID_ARGUMENT."""
        ...

    def weight_bytes(self) -> int:
        """The bytes of the model's weights and buffers on its device (one copy)."""
        ...

    def token_budget(self, prompt: str) -> int:
        """How many new tokens fit after ``prompt`` (and whatever else the model's input holds) in its text
        length."""
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
