"""Vision-language chat models as captioners: the caption is the assistant's answer to one instruction.

The processor's own chat template turns one user turn (the image, then :data:`INSTRUCTION`) into the model's
prompt; a caption prefix is the beginning of the assistant's answer, which the model continues. A family of this
kind subclasses :class:`ChatCaptioner` and names its model types.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image

from captioner.families.base import Captioner, left_pad
from imagewire_serving.provenance import ModelFiles

INSTRUCTION = "Describe this image in one sentence."


class ChatCaptioner(Captioner):
    """The prompt is the chat template's rendering of one image and the instruction; rows are left-padded (the
    models derive positions from the attention mask), the prefix appended as tokens to each row."""

    instruction: ClassVar[str] = INSTRUCTION
    # What stands between the template's "Assistant:" and the answer's first word.
    prefix_separator: ClassVar[str] = " "

    def __init__(self, model_id: str, model: Any, processor: Any, device: torch.device, files: ModelFiles) -> None:
        super().__init__(model_id, model, processor, device, files)
        if not getattr(processor, "chat_template", None):
            raise ValueError("its processor has no chat template (chat_template.jinja or processor_config.json)")
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.instruction}]}]
        self.chat: str = processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        self._chat_ids = list(self.tokenizer(self.chat, add_special_tokens=False).input_ids)
        pad = self.tokenizer.pad_token_id
        self._pad_id: int = pad if pad is not None else self.tokenizer.eos_token_id
        self._longest_chat = self._measure_longest_chat()

    def _prefix(self, prompt: str) -> list[int]:
        """The prompt's tokens as they follow the chat prompt: tokenized in context, so that tokenizers which
        mark a word's leading space (byte-level BPE's "Ġ", SentencePiece's "▁") give the ids of running text."""
        if not prompt:
            return []
        chat = self._chat_ids
        ids = list(self.tokenizer(self.chat + self.prefix_separator + prompt, add_special_tokens=False).input_ids)
        if ids[:len(chat)] == chat:
            return ids[len(chat):]
        # The prompt merged into the chat's last token: its own tokens are the closest honest choice.
        return list(self.tokenizer(self.prefix_separator + prompt, add_special_tokens=False).input_ids)

    def start_tokens(self, prompt: str) -> int:
        return self._longest_chat + len(self._prefix(prompt))

    def _encode(self, images: list[Image.Image]) -> Any:
        return self.processor(text=[self.chat] * len(images), images=[[image] for image in images], padding=True,
                              return_tensors="pt")

    def _measure_longest_chat(self) -> int:
        """The chat prompt's length for the image that takes the most image tokens: a square at the image
        processor's largest size (models that tile an image tile that one most)."""
        size = getattr(self.processor.image_processor, "size", None) or {}
        edge = max([value for value in dict(size).values() if isinstance(value, int)] or [224])
        return int(self._encode([Image.new("RGB", (edge, edge))])["input_ids"].shape[1])

    def inputs(self, images: list[Image.Image], prompts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self._encode(images)
        rows = [ids[mask.bool()].tolist() + self._prefix(prompt)
                for ids, mask, prompt in zip(encoded["input_ids"], encoded["attention_mask"], prompts)]
        ids, mask = left_pad(rows, self._pad_id)
        return {**{name: value for name, value in encoded.items() if isinstance(value, torch.Tensor)},
                "input_ids": ids, "attention_mask": mask}

    def decode(self, output: torch.Tensor, inputs: dict[str, torch.Tensor], prompts: list[str]) -> list[str]:
        # The output repeats the whole chat prompt: keep the new tokens, after the prefix's own tokens, so the
        # tokenizer decides the spacing between them.
        new = output[:, inputs["input_ids"].shape[1]:]
        return [self.tokenizer.decode(self._prefix(prompt) + row.tolist(), skip_special_tokens=True)
                for prompt, row in zip(prompts, new)]
