"""What every locally built video model shares: how it is saved, and the tiny T5 text encoder and tokenizer of
the families that take a prompt (built from a config and a small vocabulary: nothing comes from a hub)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animator.families.base import DEFAULTS_FILE

# The tokenizer's words: enough for prompts in tests and demos to be real words, not unknown tokens.
_TEXT = (
    "a an the of and with in on over under through across into near far away up down left right "
    "cat dog bird fish horse cow boat car train plane ball tree flower river sea sky cloud sun moon "
    "mountain forest street city house road field beach snow rain wind fire water light night day "
    "runs walks jumps swims flies rolls falls spins waves turns moves drifts grows shines rises sets "
    "red orange yellow green blue purple white black grey small big slow fast calm bright dark "
    "camera pans zooms slowly quickly gently scene view close wide shot video blurry jittery distorted"
)
WORDS = tuple(_TEXT.split())


@dataclass(frozen=True)
class TinyText:
    """A tiny T5-family text encoder's sizes and the token limit of its tokenizer."""

    width: int = 16
    layers: int = 1
    heads: int = 2
    max_tokens: int = 32


@dataclass(frozen=True)
class TinyDefaults:
    """The request defaults a tiny video model is built with (written to DEFAULTS_FILE)."""

    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    decode_chunk_size: int
    # A preview every other step: the few steps of these models would otherwise show none.
    preview_every: int = 2


def t5_tokenizer(max_tokens: int) -> Any:
    """A T5 tokenizer (unigram, SentencePiece-style word pieces) over WORDS: <pad>=0, </s>=1, <unk>=2."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + word, -1.0) for word in WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_tokens)


def text_config(vocab_size: int, text: TinyText) -> dict[str, Any]:
    """A T5-family encoder config over the tokenizer's ids (pad 0, eos 1): for T5Config or UMT5Config."""
    return {"vocab_size": vocab_size, "d_model": text.width, "d_kv": text.width // text.heads,
            "d_ff": 2 * text.width, "num_layers": text.layers, "num_heads": text.heads, "pad_token_id": 0,
            "eos_token_id": 1, "decoder_start_token_id": 0}


def save(pipeline: Any, out: Path, defaults: Mapping[str, Any] | TinyDefaults, *,
         processors: Mapping[str, str] | None = None) -> Path:
    """``save_pretrained`` the pipeline into ``out`` with the request defaults that suit it (DEFAULTS_FILE).

    ``processors``: components whose class to record as the hub's repositories name it. Without torchvision,
    ``CLIPImageProcessor()`` is really its PIL-backed subclass and save_pretrained records that name; recording
    the hub's makes loading take the path a hub model takes.
    """
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out, safe_serialization=True)
    index_path = out / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update({name: ["transformers", class_name] for name, class_name in (processors or {}).items()})
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    values = dataclasses.asdict(defaults) if isinstance(defaults, TinyDefaults) else dict(defaults)
    (out / DEFAULTS_FILE).write_text(json.dumps(values, indent=2) + "\n")
    return out
