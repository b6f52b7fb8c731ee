"""Caption defaults come from the model's generation config (as plain ``generate`` takes them); the flags win."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from imagewire.client import AsyncCaptionClient
from transformers import GenerationConfig

from captioner.app import CaptionerApp
from captioner.backend import GenerationOptions, generation_defaults
from captioner.families import load_captioner
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.images import decode_image
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServerSettings
from tests.support import serving, solid


def test_defaults_follow_the_generation_config_as_generate_does() -> None:
    assert generation_defaults(GenerationConfig(max_new_tokens=7, num_beams=3)) == GenerationOptions(7, 3)
    # max_length counts the start token a caption begins from.
    assert generation_defaults(GenerationConfig(max_length=12)) == GenerationOptions(11, 1)
    # Nothing set: transformers' own 20 new tokens, greedy.
    assert generation_defaults(GenerationConfig()) == GenerationOptions(20, 1)


@pytest.fixture(scope="module")
def configured_model(tiny_caption_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a generation config asking for 5 new tokens and 2 beams."""
    out = tmp_path_factory.mktemp("configured-blip") / "model"
    shutil.copytree(tiny_caption_model, out)
    config = GenerationConfig.from_pretrained(out)
    config.max_new_tokens, config.num_beams = 5, 2
    config.save_pretrained(out)
    return out


def test_the_embedded_and_tiny_models_default_to_transformers_20_tokens(tiny_caption_model: str) -> None:
    from captioner.app import SHIPPED_MODEL

    for source in (tiny_caption_model, str(SHIPPED_MODEL)):
        backend = load_captioner(source, torch.device("cpu"), torch.float32)
        assert backend.defaults == GenerationOptions(max_new_tokens=20, num_beams=1)


@pytest.mark.asyncio(loop_scope="session")
async def test_list_models_and_requests_use_the_model_defaults_unless_a_flag_overrides(
    configured_model: Path,
) -> None:
    for limits, expected in ((EngineLimits(), (5, 2)),
                             (EngineLimits(default_max_new_tokens=3, default_num_beams=1), (3, 1))):
        settings = CaptionerSettings(server=ServerSettings(port=0, device="cpu", models=(str(configured_model),)),
                                     limits=limits)
        app = CaptionerApp(settings, Metrics())
        async with serving(app, app.metrics, settings.server) as server, \
                AsyncCaptionClient(server.address, timeout=60) as client:
            model = (await client.list_models()).models[0]
            assert (model.default_max_new_tokens, model.default_num_beams) == expected
            fields = {field.name: field.default_value for field in model.fields}
            assert (fields["max_new_tokens"], fields["num_beams"]) == expected
            backend = app.engine().batcher("").backend
            caption = await client.caption(solid())
            # The caption is the one generate makes with exactly those options.
            alone = backend.generate([decode_image(solid())], [""], GenerationOptions(*expected))
            assert caption.text == alone[0] and len(caption.text.split()) <= expected[0]
