"""A tiny random GIT (GitForCausalLM with GitProcessor), built from configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.tiny.words import BERT_SPECIALS, TinySizes, spread_weights, word_vocabulary


@dataclass(frozen=True)
class GitPreset(TinySizes):
    """The sizes of a locally built GIT (image encoder and text decoder alike), and its weights' spread."""

    patch_size: int = 8

    def build(self, out: Path) -> Path:
        from transformers import BertTokenizer, CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

        vocab = word_vocabulary(BERT_SPECIALS)
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=self.positions)
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": self.image_size},
                                                crop_size={"height": self.image_size, "width": self.image_size})
        # Any: spread into GitConfig's keywords, whose types differ.
        sizes: dict[str, Any] = self.transformer
        config = GitConfig(
            vision_config={**sizes, "image_size": self.image_size, "patch_size": self.patch_size},
            **sizes, vocab_size=len(vocab), max_position_embeddings=self.positions,
            # Generation starts from [CLS] and ends at [SEP], as GIT's own tokenizer has it.
            bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"], pad_token_id=vocab["[PAD]"],
        )
        model = GitForCausalLM(config).eval()
        spread_weights(model, self.std, self.seed)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
        return out
