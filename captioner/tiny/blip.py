"""Random BLIP captioners of any size, built from configs (the embedded default and the benchmarks' models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captioner.tiny.words import BERT_SPECIALS, spread_weights, word_vocabulary


@dataclass(frozen=True)
class BlipPreset:
    """The sizes of a locally built BLIP."""

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    text_hidden: int
    text_layers: int
    text_heads: int
    seed: int = 0
    # Redraw the weights at this spread (captions that depend on the image; see words.spread_weights), or keep
    # BLIP's own initialisation.
    std: float | None = None

    def build(self, out: Path) -> Path:
        return build_blip(out, self)


def build_blip(out: Path, preset: BlipPreset) -> Path:
    """Build a random BLIP with this preset's sizes and save model + processor to ``out``."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = word_vocabulary((*BERT_SPECIALS, "[DEC]"))
    # A word-level vocabulary passed as a dict: built from a vocab file, this tokenizer knew only its specials.
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=64)
    image_processor = BlipImageProcessor(size={"height": preset.image_size, "width": preset.image_size})
    config = BlipConfig(
        vision_config={
            "hidden_size": preset.vision_hidden,
            "intermediate_size": preset.vision_hidden * 4,
            "num_hidden_layers": preset.vision_layers,
            "num_attention_heads": preset.vision_heads,
            "image_size": preset.image_size,
            "patch_size": preset.patch_size,
            # BLIP's vision default (1e-10) makes random weights blind: every image would get the same caption.
            "initializer_range": 0.02,
        },
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": preset.text_hidden,
            "intermediate_size": preset.text_hidden * 4,
            "num_hidden_layers": preset.text_layers,
            "num_attention_heads": preset.text_heads,
            "encoder_hidden_size": preset.vision_hidden,
            "max_position_embeddings": 64,
            # Generation indexes the embedding table with these: they must lie inside the small vocabulary.
            "bos_token_id": vocab["[DEC]"],
            "eos_token_id": vocab["[SEP]"],
            "sep_token_id": vocab["[SEP]"],
            "pad_token_id": vocab["[PAD]"],
        },
    )
    torch.manual_seed(preset.seed)
    model = BlipForConditionalGeneration(config).eval()
    if preset.std is not None:
        spread_weights(model, preset.std, preset.seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
