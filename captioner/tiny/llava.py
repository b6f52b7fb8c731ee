"""A tiny random LLaVA (a CLIP image encoder, a projector and a Llama language model), built from configs, with a
Llama-style (SentencePiece "▁") tokenizer and a chat template written here in LLaVA-1.5's format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captioner.tiny.words import WORDS, TinySizes, sentencepiece_bpe, spread_weights, suppress_all_but_words

# "USER: <image>\n{text} ASSISTANT:", as LLaVA-1.5's template renders one user turn before the answer.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# What the tokenizer is trained on besides the words: the chat prompt as rendered around the instruction.
CHAT_TEXTS = ("USER: \nDescribe this image in one sentence. ASSISTANT:",)
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


@dataclass(frozen=True)
class LlavaPreset(TinySizes):
    """The sizes of a locally built LLaVA, and its weights' spread."""

    patch_size: int = 8
    positions: int = 128

    def build(self, out: Path) -> Path:
        from transformers import (
            CLIPImageProcessorPil,
            LlamaTokenizer,
            LlavaConfig,
            LlavaForConditionalGeneration,
            LlavaProcessor,
        )

        vocab, merges = sentencepiece_bpe([*WORDS, *CHAT_TEXTS], SPECIALS)
        tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
                                   model_max_length=self.positions)
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": self.image_size},
                                                crop_size={"height": self.image_size, "width": self.image_size})
        # LlavaConfig takes image_token_id through its attribute map, which its __init__'s annotation leaves out.
        config = LlavaConfig(  # type: ignore[call-arg]
            vision_config={**self.transformer, "model_type": "clip_vision_model", "image_size": self.image_size,
                           "patch_size": self.patch_size},
            text_config={**self.transformer, "model_type": "llama", "num_key_value_heads": self.heads,
                         "vocab_size": len(vocab), "max_position_embeddings": self.positions,
                         "bos_token_id": vocab["<s>"], "eos_token_id": vocab["</s>"], "pad_token_id": vocab["<pad>"]},
            image_token_id=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
        )
        model = LlavaForConditionalGeneration(config).eval()
        spread_weights(model, self.std, self.seed)
        model.generation_config.suppress_tokens = suppress_all_but_words(tokenizer, vocab["</s>"])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        # The image's patches without CLIP's class token: "default" selection drops the one additional token.
        LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=self.patch_size,
                       vision_feature_select_strategy="default", num_additional_image_tokens=1,
                       chat_template=CHAT_TEMPLATE).save_pretrained(out)
        return out
