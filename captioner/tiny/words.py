"""What every locally built caption model shares: its small vocabulary, tokenizers built from it, and weights drawn
wide enough that the caption depends on the image."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# The words a tiny model's captions are made of.
WORDS = (
    "a", "an", "the", "of", "on", "in", "with", "and", "at", "picture", "photo", "image", "there", "is",
    "are", "two", "three", "small", "large", "red", "green", "blue", "yellow", "white", "black",
    "orange", "purple", "circle", "square", "triangle", "star", "shape", "background", "sky", "tree",
    "dog", "cat", "person", "road", "water", "house", "car", "table", "grass", "field", "street", "room",
    "wall", "light", "dark", "bright", "near", "next", "to",
)
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def word_vocabulary(specials: Sequence[str]) -> dict[str, int]:
    """A word-level vocabulary (a BERT WordPiece tokenizer's, with whole words only): the specials, then WORDS."""
    return {token: index for index, token in enumerate([*specials, *WORDS])}


def byte_level_bpe(words: Iterable[str], specials: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges of a byte-level BPE (the tokenizers of BART, GPT-2 and SmolLM), trained here on
    ``words`` so that each word, alone or after a space ("Ġ"), is one token.

    The byte alphabet and the merges' partial words are in the vocabulary too, as in any byte-level BPE: tiny
    models keep them out of their captions with :func:`suppress_all_but_words`.
    """
    from tokenizers import pre_tokenizers

    words = list(words)
    return _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), [*words, *(" " + word for word in words)],
                      specials, pre_tokenizers.ByteLevel.alphabet())


def sentencepiece_bpe(texts: Iterable[str], specials: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges of a SentencePiece-style BPE (Llama's: a word's leading space is "▁"), trained on
    ``texts`` (words, and the chat prompt with its punctuation and newlines) so that each word is one token."""
    from tokenizers import pre_tokenizers

    return _train_bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True), texts,
                      specials, [])


def _train_bpe(pre_tokenizer: Any, texts: Iterable[str], specials: Sequence[str], alphabet: list[str]
               ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=alphabet)
    tokenizer.train_from_iterator(list(texts), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in model["merges"]]
    return model["vocab"], merges


def suppress_all_but_words(tokenizer: Any, *keep: int) -> list[int]:
    """Every token id but the space-led words of WORDS ("Ġword" or "▁word") and ``keep``: for a tiny model's
    generation config, so its captions are words of the vocabulary (never a byte or half a word, which random
    weights would pick as readily)."""
    words = {f"{space}{word}" for word in WORDS for space in ("Ġ", "▁")}
    allowed = {index for token, index in tokenizer.get_vocab().items() if token in words} | set(keep)
    return sorted(set(tokenizer.get_vocab().values()) - allowed)


def spread_weights(model: Any, std: float, seed: int) -> None:
    """Redraw every weight matrix from N(0, std²).

    At the usual initialiser scale (0.02) a tiny random model's caption hardly depends on its image: every image
    gets the same words, and a batch that mixed requests up would go unnoticed. Wider weights make the caption a
    function of the image.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


@dataclass(frozen=True)
class TinySizes:
    """What the tiny presets of the families other than BLIP share: the image side, the width, depth and heads of
    their transformers, the text length, and the spread and seed of their weights."""

    image_size: int = 32
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    positions: int = 64
    std: float = 0.3
    seed: int = 0

    @property
    def transformer(self) -> dict[str, int]:
        """The sizes of a transformer config (vision or text) of this preset."""
        return {"hidden_size": self.hidden, "intermediate_size": self.hidden * 2, "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads}
