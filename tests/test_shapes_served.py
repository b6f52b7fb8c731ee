"""The shipped shapes model as the captioner's embedded default, through a real gRPC server.

Freshly drawn scenes (seeds used neither in training, from 1,000,000, nor in the model's own evaluation,
below 10,000) must get captions naming the right colour and shape.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from imagewire.client import AsyncCaptionClient
from PIL import Image

from captioner.app import SHIPPED_MODEL, CaptionerApp
from captioner.settings import CaptionerSettings
from captioner.training.shapes import Scene, make_example
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.support import encode, png, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

FRESH_SEEDS = range(20_000, 20_120)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> AsyncIterator[GrpcServer]:
    settings = CaptionerSettings(server=ServerSettings(port=0))  # no --model: the embedded default
    metrics = Metrics()
    async with serving(CaptionerApp(settings, metrics), metrics, settings.server) as running:
        yield running


def names_it(caption: str, scene: Scene) -> bool:
    return all(f"{shape.colour} {shape.shape}" in caption for shape in scene.shapes)


async def test_the_default_model_is_the_shipped_one(server: GrpcServer) -> None:
    async with AsyncCaptionClient(server.address) as client:
        models = await client.list_models()
    assert models.default_model_id == "shapes-blip"
    assert (SHIPPED_MODEL / "model.safetensors").stat().st_size < 8 * 1024 * 1024


async def test_at_least_95_percent_of_fresh_single_shape_scenes_are_named_right(server: GrpcServer) -> None:
    examples = [make_example(seed, max_shapes=1) for seed in FRESH_SEEDS]
    async with AsyncCaptionClient(server.address) as client:
        results = await asyncio.gather(*(client.caption(png(image)) for image, _ in examples))
    right = sum(names_it(result.text, scene) for result, (_, scene) in zip(results, examples))
    print(json.dumps({"fresh_single_shape_images": len(examples), "named_right": right,
                      "accuracy": round(right / len(examples), 4)}))
    assert right / len(examples) >= 0.95
    assert max(r.batch_size for r in results) > 1


async def test_sixteen_concurrent_different_images_each_get_their_own_caption(server: GrpcServer) -> None:
    examples, seen = [], set()
    for seed in range(30_000, 31_000):  # sixteen scenes with sixteen different captions
        image, scene = make_example(seed, max_shapes=1)
        if scene.caption not in seen:
            seen.add(scene.caption)
            examples.append((image, scene))
        if len(examples) == 16:
            break
    async with AsyncCaptionClient(server.address) as client:
        alone = [await client.caption(png(image)) for image, _ in examples]
        together = await asyncio.gather(*(client.caption(png(image)) for image, _ in examples))
    # Made by the same copy of the weights (the same provenance key), a batched caption is the lone one. Under
    # --dtype auto a CPU may keep a second copy in another dtype for lone requests (docs/hardware.md): captions
    # of different copies are the dtypes' captions, which may differ in a word.
    same = [(a.text, b.text) for a, b in zip(alone, together) if a.provenance_key == b.provenance_key]
    assert all(a == b for a, b in same), same
    assert sum(a.text == b.text for a, b in zip(alone, together)) >= 14
    assert max(r.batch_size for r in together) > 1
    assert sum(names_it(r.text, scene) for r, (_, scene) in zip(alone, examples)) >= 15


async def test_prompt_conditioning_continues_the_prompt(server: GrpcServer) -> None:
    image, scene = make_example(20_001, max_shapes=1)
    async with AsyncCaptionClient(server.address) as client:
        plain, prompted = await asyncio.gather(client.caption(png(image)),
                                               client.caption(png(image), prompt="a picture of"))
    assert prompted.text.startswith("a picture of ")
    assert names_it(prompted.text, scene) and names_it(plain.text, scene)


def with_exif_orientation(image: Image.Image) -> bytes:
    """Stored sideways with EXIF orientation 6 ("rotate 90 clockwise to display"): upright once applied."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)


async def test_exif_rotation_and_colour_modes_do_not_break_recognition(server: GrpcServer) -> None:
    cases = []
    for seed in range(20_200, 20_210):
        image, scene = make_example(seed, max_shapes=1, size=160)
        buffer = io.BytesIO()
        image.convert("CMYK").save(buffer, "JPEG", quality=95)
        cases += [
            (with_exif_orientation(image), scene),
            (buffer.getvalue(), scene),
            (png(image.convert("P", palette=Image.Palette.ADAPTIVE)), scene),
            (png(image.convert("RGBA")), scene),
            (encode(image, "WEBP", lossless=True), scene),
        ]
    async with AsyncCaptionClient(server.address) as client:
        results = await asyncio.gather(*(client.caption(data) for data, _ in cases))
    right = sum(names_it(r.text, scene) for r, (_, scene) in zip(results, cases))
    assert right / len(cases) >= 0.9, [r.text for r in results]
