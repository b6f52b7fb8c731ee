"""Caption models built locally from configs, so the server, tests and benchmarks run with no model hub.

``tiny``: a random BLIP of a few hundred KB (fast tests of the serving path; captions are random words).
``small``: a random BLIP with a ViT-S/16-like vision encoder at 224 px and a 4-layer BERT-like decoder: the
caption benchmark's default, sized like the model the serving targets were set on.
``bench``: the same with a ViT-B/16-like vision encoder (BLIP-base's), for benchmarks where the encoder dominates.

Each is saved with ``save_pretrained`` into a cache directory keyed by its config, and loaded back through the
same ``from_pretrained`` path a hub model takes.  ``python -m captioner.tiny --preset bench --out DIR`` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagewire_serving.model_cache import LocalModels

# Bumped whenever build_blip changes what it builds, so cached copies are rebuilt.
_BUILDER_VERSION = 2

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
_WORDS = [
    "a", "an", "the", "of", "on", "in", "with", "and", "at", "picture", "photo", "image", "there", "is",
    "are", "two", "three", "small", "large", "red", "green", "blue", "yellow", "white", "black",
    "orange", "purple", "circle", "square", "triangle", "star", "shape", "background", "sky", "tree",
    "dog", "cat", "person", "road", "water", "house", "car", "table", "grass", "field", "street", "room",
    "wall", "light", "dark", "bright", "near", "next", "to",
]


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


PRESETS: dict[str, BlipPreset] = {
    "tiny": BlipPreset(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2,
                       text_hidden=32, text_layers=2, text_heads=2),
    "small": BlipPreset(image_size=224, patch_size=16, vision_hidden=384, vision_layers=12, vision_heads=6,
                        text_hidden=384, text_layers=4, text_heads=6),
    # Compute dominated by the vision encoder, as in the real BLIP models.
    "bench": BlipPreset(image_size=224, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12,
                        text_hidden=384, text_layers=4, text_heads=6),
}


def build_blip(out: Path, preset: BlipPreset) -> Path:
    """Build a random BLIP with this preset's sizes and save model + processor to ``out``."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = {token: index for index, token in enumerate([*_SPECIAL, *_WORDS])}
    # A word-level vocabulary passed as a dict: built from a vocab file, this tokenizer knew only its specials.
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=64)
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
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


MODELS = LocalModels("blip", PRESETS, build_blip, version=_BUILDER_VERSION, marker="config.json")
ensure_model = MODELS.ensure


if __name__ == "__main__":
    MODELS.main(__doc__)
