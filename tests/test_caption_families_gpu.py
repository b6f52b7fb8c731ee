"""Every caption family on a CUDA device (marker ``cuda``): float16 by default, the warm-up at the largest batch,
captions of words, and in float32 the one-by-one captions from a batch."""

from __future__ import annotations

import asyncio

import pytest
from imagewire.client import AsyncCaptionClient

from captioner.limits import EngineLimits
from captioner.tiny.words import WORDS
from tests.families import CaptionFamily, family_params, model_dir, noise_pngs, prompts_of
from tests.support import captioner_app, serving

pytestmark = [pytest.mark.cuda, pytest.mark.asyncio(loop_scope="session")]

LIMITS = EngineLimits(default_max_new_tokens=8, max_batch_size=16, max_batch_delay_ms=200)


@family_params
@pytest.mark.parametrize("dtype", ["auto", "float32"])
async def test_the_family_serves_batches_on_cuda(family: CaptionFamily, dtype: str) -> None:
    app = captioner_app(model_dir(family), LIMITS, device="cuda:0", dtype=dtype)
    images, prompts = noise_pngs(seed=1), prompts_of(family)
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncCaptionClient(server.address, timeout=60) as client:
        (model,) = (await client.list_models()).models
        assert (model.family, model.device, model.dtype) == (family.name, "cuda:0",
                                                             "float16" if dtype == "auto" else "float32")
        alone = [(await client.caption(image, prompt=prompt)).text for image, prompt in zip(images, prompts)]
        together = await asyncio.gather(*(client.caption(image, prompt=prompt)
                                          for image, prompt in zip(images, prompts)))
    for text, prompt in zip(alone, prompts):
        assert text.startswith(prompt) and set(text.split()) <= set(WORDS), text
    assert max(caption.batch_size for caption in together) > 1
    if dtype == "float32":
        # In float16 a batch's other rows may tip a near-tie between two words; in float32 they must not.
        assert [caption.text for caption in together] == alone
