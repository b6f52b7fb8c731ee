"""What the families that take a text prompt share (LTX-Video, Wan): the prompt, negative prompt and guidance
fields, and prompts checked against the model's token limit rather than cut short by the pipeline."""

from __future__ import annotations

import copy
from typing import Any

from animator.families.base import PipelineBackend, call_default
from animator.params import MAX_GUIDANCE_SCALE, GenerationParams
from imagewire_serving import errors
from imagewire_serving.errors import FieldViolation
from imagewire_serving.fields import RequestField

# A bound on the text a request may carry; the token limit, checked once the prompt is tokenized, is the real one.
MAX_PROMPT_CHARS = 4096


class PromptedBackend(PipelineBackend):
    """A family whose pipeline takes ``prompt``, ``negative_prompt`` and ``guidance_scale`` (classifier-free
    guidance, on above 1), with a tokenizer that reads at most ``max_sequence_length`` tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Tokenizer calls set padding and truncation on the shared Rust tokenizer before encoding; a copy used only
        # by validation (on the event loop) never races the pipeline's own calls on the device thread.
        self._counter = copy.deepcopy(self.pipeline.tokenizer)
        self.max_tokens = min(call_default(self.pipeline, "max_sequence_length"),
                              self.pipeline.tokenizer.model_max_length)

    @classmethod
    def prompt_fields(cls, pipeline: Any) -> tuple[RequestField, ...]:
        """The three fields, with the pipeline's own default guidance."""
        return (
            RequestField("prompt", "", 0, MAX_PROMPT_CHARS),
            RequestField("negative_prompt", "", 0, MAX_PROMPT_CHARS),
            RequestField("guidance_scale", float(call_default(pipeline, "guidance_scale")), 0.0, MAX_GUIDANCE_SCALE),
        )

    def prompt_arguments(self, params: GenerationParams) -> dict[str, Any]:
        return {"prompt": params.prompt, "negative_prompt": params.negative_prompt,
                "guidance_scale": params.guidance_scale, "max_sequence_length": self.max_tokens}

    def violations(self, params: GenerationParams) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        for name in ("prompt", "negative_prompt"):
            count = len(self._counter(getattr(params, name) or "").input_ids)
            if count > self.max_tokens:
                found.append(FieldViolation(name, f"{name} is {count} tokens; model {errors.shown(self.model_id)} "
                                                  f"reads at most {self.max_tokens}"))
        # The pipelines encode the negative prompt only for classifier-free guidance.
        if params.negative_prompt and (params.guidance_scale or 0.0) <= 1.0:
            found.append(FieldViolation("negative_prompt", f"negative_prompt is used only with guidance_scale "
                                                           f"above 1, not {params.guidance_scale:g}"))
        return found
