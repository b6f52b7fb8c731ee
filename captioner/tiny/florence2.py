"""A tiny random Florence-2 (a two-stage DaViT image encoder and a BART encoder-decoder), built from configs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from captioner.tiny.words import WORDS, TinySizes, byte_level_bpe, spread_weights, suppress_all_but_words

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>")
# The words of the text the processor makes of the <CAPTION> task: "What does the image describe?".
TASK_WORDS = ("What", "does", "describe", "?")


@dataclass(frozen=True)
class Florence2Preset(TinySizes):
    """The sizes of a locally built Florence-2, and its weights' spread."""

    layers: int = 1
    # Per stage of the image encoder: its width and how much it shrinks the image.
    widths: tuple[int, ...] = (16, 32)
    strides: tuple[int, ...] = (4, 2)

    def build(self, out: Path) -> Path:
        from transformers import (
            BartTokenizer,
            CLIPImageProcessorPil,
            Florence2Config,
            Florence2ForConditionalGeneration,
            Florence2Processor,
        )

        vocab, merges = byte_level_bpe([*WORDS, *TASK_WORDS], SPECIALS)
        # Merges as pairs work (the fast tokenizer's own form); the annotation names only strings.
        tokenizer = BartTokenizer(vocab=vocab, merges=merges, model_max_length=self.positions,  # type: ignore[arg-type]
                                  extra_special_tokens={"image_token": "<image>"})
        # One image token per cell of the last stage's grid, and one for the whole image.
        image_tokens = (self.image_size // math.prod(self.strides)) ** 2 + 1
        image_processor = CLIPImageProcessorPil(size={"height": self.image_size, "width": self.image_size},
                                                do_center_crop=False, image_seq_length=image_tokens)
        model = Florence2ForConditionalGeneration(Florence2Config(
            text_config=self._text_config(vocab), vision_config=self._vision_config(),
            image_token_id=vocab["<image>"])).eval()
        spread_weights(model, self.std, self.seed)
        model.generation_config.suppress_tokens = suppress_all_but_words(tokenizer, vocab["<s>"], vocab["</s>"])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        Florence2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
        return out

    def _text_config(self, vocab: dict[str, int]) -> dict[str, object]:
        return {
            "model_type": "bart", "vocab_size": len(vocab), "d_model": self.hidden,
            "max_position_embeddings": self.positions,
            "encoder_layers": self.layers, "decoder_layers": self.layers,
            "encoder_ffn_dim": self.hidden * 2, "decoder_ffn_dim": self.hidden * 2,
            "encoder_attention_heads": self.heads, "decoder_attention_heads": self.heads,
            # BART's conventions: answers start from </s> then <s>, and end at </s>.
            "bos_token_id": vocab["<s>"], "eos_token_id": vocab["</s>"], "pad_token_id": vocab["<pad>"],
            "decoder_start_token_id": vocab["</s>"],
        }

    def _vision_config(self) -> dict[str, object]:
        stages = len(self.widths)
        return {
            "depths": [1] * stages, "embed_dim": list(self.widths), "patch_stride": list(self.strides),
            "patch_size": [7] + [3] * (stages - 1), "patch_padding": [3] + [1] * (stages - 1),
            "patch_prenorm": [False] + [True] * (stages - 1),
            "num_heads": [max(1, width // 16) for width in self.widths],
            "num_groups": [max(1, width // 16) for width in self.widths],
            "window_size": 4, "projection_dim": self.hidden,
        }
