"""A tiny random Idefics3 (SmolVLM's architecture: a SigLIP-like image encoder, a Llama-like language model), built
from configs, with a chat template written here in SmolVLM's format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captioner.tiny.words import WORDS, TinySizes, byte_level_bpe, spread_weights, suppress_all_but_words

# One user turn of images and text, then "Assistant:" where the answer begins, as SmolVLM's template renders it.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# The chat's own words, and those of the captioner's instruction ("Describe this image in one sentence.").
CHAT_WORDS = ("User", "Assistant", ":", "Describe", "this", "one", "sentence", ".")
# How many patches (per side) the connector merges into one image token.
SCALE = 2
NAMED_SPECIALS = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                  "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}


@dataclass(frozen=True)
class Idefics3Preset(TinySizes):
    """The sizes of a locally built Idefics3, and its weights' spread. Images are scaled to ``longest_edge`` and
    tiled into ``image_size`` squares (plus the whole image), as SmolVLM does at 2048 and 512."""

    positions: int = 256
    std: float = 0.1
    longest_edge: int = 64
    patch_size: int = 8

    def build(self, out: Path) -> Path:
        from transformers import (
            GPT2Tokenizer,
            Idefics3Config,
            Idefics3ForConditionalGeneration,
            Idefics3ImageProcessorPil,
            Idefics3Processor,
        )

        tiles = self.longest_edge // self.image_size
        rows = [f"<row_{row}_col_{col}>" for row in range(1, tiles + 1) for col in range(1, tiles + 1)]
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *NAMED_SPECIALS.values(), *rows]
        vocab, merges = byte_level_bpe([*WORDS, *CHAT_WORDS], specials)
        # Merges as pairs work (the fast tokenizer's own form); the annotation names only strings.
        tokenizer = GPT2Tokenizer(
            vocab=vocab, merges=merges, bos_token="<|endoftext|>", unk_token="<|endoftext|>",  # type: ignore[arg-type]
            eos_token="<end_of_utterance>", pad_token="<|im_end|>", extra_special_tokens=NAMED_SPECIALS,
            model_max_length=self.positions)
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *rows]})
        image_processor = Idefics3ImageProcessorPil(size={"longest_edge": self.longest_edge},
                                                    max_image_size={"longest_edge": self.image_size})
        # Image tokens per tile: its patches, merged SCALE² to one by the connector.
        image_tokens = (self.image_size // self.patch_size) ** 2 // SCALE**2
        sizes = self.transformer
        config = Idefics3Config(
            image_token_id=vocab["<image>"], scale_factor=SCALE,
            vision_config={**sizes, "image_size": self.image_size, "patch_size": self.patch_size},
            text_config={**sizes, "model_type": "llama", "num_key_value_heads": self.heads,
                         "vocab_size": len(vocab), "max_position_embeddings": self.positions,
                         "bos_token_id": vocab["<|endoftext|>"], "eos_token_id": vocab["<end_of_utterance>"],
                         "pad_token_id": vocab["<|im_end|>"]},
        )
        model = Idefics3ForConditionalGeneration(config).eval()
        spread_weights(model, self.std, self.seed)
        model.generation_config.suppress_tokens = suppress_all_but_words(tokenizer, vocab["<end_of_utterance>"])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_tokens,
                          chat_template=CHAT_TEMPLATE).save_pretrained(out)
        return out
