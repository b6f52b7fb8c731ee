"""The caption families the tests serve, each from its tiny random checkpoint: one row per family.

Adding a family to the captioner is its module in ``captioner/families/``, its preset in ``captioner/tiny/`` and a
row here; every family test (``tests/test_caption_families.py``, ``tests/test_model_fields.py``) then covers it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from captioner import tiny
from captioner.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.support import captioner_app, png, serving

ALL_FIELDS = frozenset({"image", "prompt", "max_new_tokens", "num_beams"})


@dataclass(frozen=True)
class CaptionFamily:
    """A family as a client sees it: its name in ListModels, the tiny preset serving it, the fields it uses."""

    name: str
    preset: str
    fields: frozenset[str] = ALL_FIELDS

    def __str__(self) -> str:
        return self.name

    @property
    def takes_prompts(self) -> bool:
        return "prompt" in self.fields


FAMILIES = (
    CaptionFamily("blip", "tiny-blip"),
    CaptionFamily("git", "tiny-git"),
    # Florence-2 answers its <CAPTION> task: no caption prefix.
    CaptionFamily("florence2", "tiny-florence2", ALL_FIELDS - {"prompt"}),
    CaptionFamily("idefics3", "tiny-idefics3"),
    CaptionFamily("llava", "tiny-llava"),
)
family_params = pytest.mark.parametrize("family", FAMILIES, ids=str)


def model_dir(family: CaptionFamily) -> str:
    return str(tiny.ensure_model(family.preset))


@contextlib.asynccontextmanager
async def family_server(family: CaptionFamily, limits: EngineLimits | None = None) -> AsyncIterator[GrpcServer]:
    """A captioner on port 0 serving the family's tiny checkpoint on the CPU, in float32: under --dtype auto, a
    CPU that times bfloat16 faster for full batches may run lone requests on a float32 copy and batches on a
    bfloat16 one (docs/hardware.md), and these tests compare batched captions with one-by-one ones."""
    app = captioner_app(model_dir(family), limits, device="cpu", dtype="float32")
    async with serving(app, app.metrics, app.settings.server) as server:
        yield server


# Shapes of every kind, so that models which tile an image by its shape get rows of different lengths.
SIZES = [(32, 32), (48, 24), (24, 48), (40, 40), (64, 32), (32, 20), (36, 36), (20, 40)]
PROMPTS = ["", "a picture of", "two", "", "a red", "there is", "", "the"]


def noise_pngs(seed: int) -> list[bytes]:
    """Eight random images, one of each of SIZES."""
    rng = np.random.default_rng(seed)
    return [png(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))) for w, h in SIZES]


def prompts_of(family: CaptionFamily) -> list[str]:
    """A prompt for each of eight images: PROMPTS, or none where the family takes no caption prefix."""
    return PROMPTS if family.takes_prompts else [""] * len(PROMPTS)
