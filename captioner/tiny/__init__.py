"""Caption models built locally from configs, so the server, tests and benchmarks run with no model hub.

``tiny``: a random BLIP of a few hundred KB (fast tests of the serving path; captions are random words).
``small``: a random BLIP with a ViT-S/16-like vision encoder at 224 px and a 4-layer BERT-like decoder: the
caption benchmark's default, sized like the model the serving targets were set on.
``bench``: the same with a ViT-B/16-like vision encoder (BLIP-base's), for benchmarks where the encoder dominates.
``large``: BLIP-large's architecture (ViT-L/16 at 384 px, a BERT-base decoder), random weights: the compile bench's.
``tiny-blip``, ``tiny-git``, ``tiny-florence2``, ``tiny-idefics3``, ``tiny-llava``: one tiny random model of each
caption family, their tokenizers built from the same small vocabulary (captions are its words) and their weights
drawn wide enough that the caption depends on the image.

Each is saved with ``save_pretrained`` into a cache directory keyed by its config, and loaded back through the
same ``from_pretrained`` path a hub model takes.  ``python -m captioner.tiny --preset bench --out DIR`` builds one.
"""

from __future__ import annotations

from pathlib import Path

from captioner.tiny.blip import BlipPreset, build_blip
from captioner.tiny.florence2 import Florence2Preset
from captioner.tiny.git import GitPreset
from captioner.tiny.idefics3 import Idefics3Preset
from captioner.tiny.llava import LlavaPreset
from imagewire_serving.model_cache import LocalModels

__all__ = ["MODELS", "PRESETS", "BlipPreset", "build_blip", "ensure_model"]

# Bumped whenever a builder changes what it builds, so cached copies are rebuilt.
_BUILDER_VERSION = 3

Preset = BlipPreset | GitPreset | Florence2Preset | Idefics3Preset | LlavaPreset

PRESETS: dict[str, Preset] = {
    "tiny": BlipPreset(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2,
                       text_hidden=32, text_layers=2, text_heads=2),
    "small": BlipPreset(image_size=224, patch_size=16, vision_hidden=384, vision_layers=12, vision_heads=6,
                        text_hidden=384, text_layers=4, text_heads=6),
    # Compute dominated by the vision encoder, as in the real BLIP models.
    "bench": BlipPreset(image_size=224, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12,
                        text_hidden=384, text_layers=4, text_heads=6),
    # BLIP-large's architecture (Salesforce/blip-image-captioning-large: ViT-L/16 at 384 px, 24 layers 1024 wide;
    # a BERT-base decoder, 12 layers 768 wide) with random weights and the small word vocabulary: seconds per
    # caption on a CPU, for the compile and precision benchmarks.
    "large": BlipPreset(image_size=384, patch_size=16, vision_hidden=1024, vision_layers=24, vision_heads=16,
                        text_hidden=768, text_layers=12, text_heads=12),
    "tiny-blip": BlipPreset(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2,
                            text_hidden=32, text_layers=2, text_heads=2, std=0.3),
    "tiny-git": GitPreset(),
    "tiny-florence2": Florence2Preset(),
    "tiny-idefics3": Idefics3Preset(),
    "tiny-llava": LlavaPreset(),
}


def _build(out: Path, preset: Preset) -> Path:
    return preset.build(out)


MODELS = LocalModels("caption", PRESETS, _build, version=_BUILDER_VERSION, marker="config.json")
ensure_model = MODELS.ensure
