"""The untrained captioner built from scratch: its vocabulary, tokenizer and processor, BLIP config and weights.

Token conventions (why the model works through the stock ``generate``): BLIP's ``generate`` overwrites
``input_ids[:, 0]`` with ``bos_token_id`` and drops the last column (the tokenizer's ``[SEP]``), while ``forward``
leaves ``input_ids`` alone. Using ``[CLS]`` as ``bos`` makes both see the same first token. The tokenizer pads on
the left so a batch with different prompts still ends every row in ``[SEP]`` (dropped) and keeps the real
``[CLS]`` of each row.
"""

from __future__ import annotations

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)

from captioner.training.settings import PROMPTS, TrainSettings
from captioner.training.shapes import COLOURS, SHAPES

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CAPTION_WORDS: tuple[str, ...] = ("a", "an", "and", "on", "background")


def build_vocab() -> dict[str, int]:
    """Special tokens first, then every word a caption or a trained prompt can contain."""
    words = set(CAPTION_WORDS) | set(COLOURS) | set(SHAPES)
    for prompt in PROMPTS:
        words.update(prompt.split())
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *sorted(words)])}


def build_processor(image_size: int) -> BlipProcessor:
    """The tokenizer over :func:`build_vocab` (padding on the left) and an image processor at ``image_size``."""
    # vocab= (not vocab_file=) is what gives a working WordPiece model with these words.
    tokenizer = BertTokenizer(vocab=build_vocab(), do_lower_case=True, padding_side="left")
    tokenizer.model_max_length = 64
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_config(settings: TrainSettings, tokenizer: BertTokenizer) -> BlipConfig:
    """A small BLIP whose special token ids fall inside the tokenizer's vocabulary."""
    hidden = settings.hidden_size
    text_config = {
        "vocab_size": len(tokenizer.get_vocab()),
        "hidden_size": hidden,
        "encoder_hidden_size": hidden,
        "intermediate_size": settings.intermediate_size,
        "projection_dim": hidden,
        "num_hidden_layers": settings.text_layers,
        "num_attention_heads": 4,
        # Captions use < 25 positions; the spare ones keep long prompts or max_new_tokens from indexing past
        # the table (they are untrained, so what comes out there is noise, not a crash).
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": hidden,
        "intermediate_size": settings.intermediate_size,
        "projection_dim": hidden,
        "num_hidden_layers": settings.vision_layers,
        "num_attention_heads": 4,
        "image_size": settings.image_size,
        "patch_size": settings.patch_size,
        # BLIP's default (1e-10) starts position embeddings at zero; where a shape is matters for the caption order.
        "initializer_range": 0.02,
    }
    config = BlipConfig(text_config=text_config, vision_config=vision_config, projection_dim=hidden)
    config.architectures = ["BlipForConditionalGeneration"]
    return config


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """2D sine-cosine position table (row half, column half) with a zero row for the class token."""
    quarter = dim // 4
    frequencies = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coordinate in (rows.flatten(), columns.flatten()):
        angles = coordinate[:, None].double() * frequencies[None, :]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat([torch.zeros(1, 4 * quarter, dtype=torch.float64), torch.cat(parts, dim=1)])
    return table.float()


def build_model(settings: TrainSettings) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A randomly initialised model (from torch's seeded generator) and its processor."""
    processor = build_processor(settings.image_size)
    model = BlipForConditionalGeneration(build_config(settings, processor.tokenizer))
    # Start the vision position embeddings from a 2D grid layout instead of noise; they stay trainable.
    with torch.no_grad():
        grid = settings.image_size // settings.patch_size
        model.vision_model.embeddings.position_embedding.copy_(0.5 * sincos_positions(grid, settings.hidden_size))
    return model, processor
