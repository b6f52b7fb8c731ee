"""--compile: parts compiled before SERVING through real servers, the same output as eager, no recompilation under
mixed batch sizes, a part that cannot compile served eagerly, and the restart that takes the cached decision."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from imagewire.client import AsyncAnimateClient, AsyncCaptionClient
from PIL import Image

from animator import tiny as animator_tiny
from captioner.limits import EngineLimits
from imagewire_serving import compiling
from tests.support import animator_app, captioner_app, encode, serving, solid

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (20, 20, 20), (240, 240, 240)]
LIMITS = EngineLimits(default_max_new_tokens=6, max_batch_size=4)


def recompiles(app: Any) -> float:
    return float(app.metrics.registry.get_sample_value("imagewire_recompiles"))


async def captions(app: Any) -> tuple[list[str], Any]:
    """Every colour captioned alone, then all at once (batches of several sizes): the captions and the model."""
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncCaptionClient(server.address, timeout=120) as client:
        info = (await client.list_models()).models[0]
        alone = [(await client.caption(solid(colour))).text for colour in COLOURS]
        together = await asyncio.gather(*(client.caption(solid(colour)) for colour in COLOURS))
        assert [result.text for result in together] == alone  # a caption does not depend on its batch
        assert recompiles(app) == 0  # every batch size ran code compiled before SERVING
    return alone, info


@pytest.mark.timeout(900)
async def test_a_compiled_vision_encoder_serves_the_captions_of_eager_and_a_restart_reuses_the_decision(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    eager, eager_info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                     compile="off"))
    assert list(eager_info.compiled_parts) == [] and "--compile off" in eager_info.choice
    compiled, info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                  compile="on", compile_cache=tmp_path))
    assert list(info.compiled_parts) == ["vision encoder"]
    assert "float32 compiled" not in info.choice and "(compiled: vision encoder)" in info.choice
    assert compiled == eager
    with caplog.at_level(logging.INFO, logger="imagewire_serving.app"):
        again, again_info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                         compile="on", compile_cache=tmp_path))
    assert "decided at an earlier start" in caplog.text
    assert list(again_info.compiled_parts) == ["vision encoder"] and again == eager


@pytest.mark.timeout(900)
async def test_a_part_that_cannot_compile_runs_eagerly_with_one_line_saying_why(
    tiny_caption_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        raise RuntimeError("no C++ compiler on this host")

    monkeypatch.setattr(compiling, "compile_options", lambda device: {"backend": no_compiler})
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.compiling"):
        texts, info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                   compile="on", compile_cache=tmp_path))
    assert all(texts) and list(info.compiled_parts) == []
    lines = [r.getMessage() for r in caplog.records if "cannot compile" in r.getMessage()]
    assert len(lines) == 1 and "no C++ compiler on this host" in lines[0] and "vision encoder" in lines[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


@pytest.mark.timeout(1200)
async def test_a_compiled_denoiser_and_decoder_make_the_frames_of_eager(tmp_path: Path) -> None:
    """Video frames at least 40 dB PSNR against eager in the same dtype (the tiny SVD, float32)."""
    import av

    model = str(animator_tiny.ensure_model("tiny"))
    request = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2, "decode_chunk_size": 2,
               "seed": 7}
    image = encode(Image.new("RGB", (64, 64), (180, 60, 20)), "PNG")
    frames = {}
    for mode in ("off", "on"):
        app = animator_app(model, device="cpu", dtype="float32", compile=mode, compile_cache=tmp_path)
        async with serving(app, app.metrics, app.settings.server) as server, \
                AsyncAnimateClient(server.address, timeout=600) as client:
            parts = list((await client.list_models()).models[0].compiled_parts)
            assert parts == ([] if mode == "off" else ["denoiser", "vae decoder"])
            out = tmp_path / f"{mode}.mp4"
            await client.animate_to_file(image, out, **request)
            assert recompiles(app) == 0
        with av.open(str(out)) as video:
            frames[mode] = np.stack([frame.to_ndarray(format="rgb24") for frame in video.decode(video=0)])
    assert frames["on"].shape == frames["off"].shape == (4, 64, 64, 3)
    assert psnr(frames["on"], frames["off"]) >= 40


@pytest.mark.cuda
@pytest.mark.timeout(900)
async def test_on_cuda_the_vision_encoder_compiles_autotuned_and_serves_the_captions_of_eager(
    tiny_caption_model: str, tmp_path: Path
) -> None:
    eager, _ = await captions(captioner_app(tiny_caption_model, LIMITS, device="cuda:0", dtype="float32",
                                            compile="off"))
    compiled, info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cuda:0", dtype="float32",
                                                  compile="on", compile_cache=tmp_path))
    assert list(info.compiled_parts) == ["vision encoder"] and compiled == eager
