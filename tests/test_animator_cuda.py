"""Jobs and previews on a CUDA device (skipped without a GPU): SVD in float16, LTX-Video and Wan in the dtype they
were trained in; the projection is fitted and applied to the latents on the device, and a job streams a whole
video with its previews."""

from __future__ import annotations

import io

import av
import pytest
import torch
from PIL import Image

from animator import families, tiny
from animator.engine import AnimateEngine
from animator.events import Chunk, Header, Preview, Result
from animator.families.svd import SvdBackend
from animator.limits import EngineLimits
from animator.params import AnimateInput
from imagewire_serving.metrics import Metrics
from tests.animator_support import noise_png

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


async def test_a_job_with_previews_on_cuda_in_float16() -> None:
    backend = SvdBackend.load(str(tiny.ensure_model("tiny")), torch.device("cuda:0"), torch.float16, model_id="tiny")
    assert backend.projection.weights.shape == (5, 3)
    engine = AnimateEngine([backend], EngineLimits(), Metrics())
    engine.start()
    try:
        request = AnimateInput(image=noise_png(3), seed=1, preview_every=1, width=96, height=64, num_frames=6,
                               num_inference_steps=3, job_id="cuda-job")
        events = [event async for event in engine.animate(request)]
        again = [event async for event in engine.watch("cuda-job")]
    finally:
        await engine.close()
    previews = [event for event in events if isinstance(event, Preview)]
    assert [preview.step for preview in previews] == [1, 2, 3]
    assert Image.open(io.BytesIO(previews[-1].image)).size == (previews[-1].width, previews[-1].height)
    data = b"".join(event.data for event in events if isinstance(event, Chunk))
    assert isinstance(events[-1], Result) and events[-1].total_bytes == len(data) > 0
    assert b"".join(event.data for event in again if isinstance(event, Chunk)) == data


@pytest.mark.parametrize("cpu_offload", [False, True])
@pytest.mark.parametrize("preset", ["ltx-tiny", "wan-tiny"])
async def test_prompted_families_on_cuda_in_their_trained_dtype(preset: str, cpu_offload: bool) -> None:
    """float16, --dtype auto's CUDA dtype, becomes bfloat16 for LTX-Video and Wan (Wan's VAE and image encoder stay
    float32); a prompted job streams its frames and previews, with and without model CPU offload."""
    backend = families.load(preset, str(tiny.ensure_model(preset)), torch.device("cuda:0"), torch.float16,
                            cpu_offload=cpu_offload, dtype_chosen=False)
    assert backend.dtype == torch.bfloat16
    assert backend.pipeline.vae.dtype == (torch.float32 if backend.family == "wan" else torch.bfloat16)
    engine = AnimateEngine([backend], EngineLimits(), Metrics())
    engine.start()
    try:
        request = AnimateInput(image=noise_png(3), seed=1, preview_every=1, prompt="a red boat on the sea",
                               num_inference_steps=3, job_id=f"cuda-{preset}-{cpu_offload}")
        events = [event async for event in engine.animate(request)]
    finally:
        await engine.close()
    assert [event.step for event in events if isinstance(event, Preview)] == [1, 2, 3]
    header = next(event for event in events if isinstance(event, Header))
    data = b"".join(event.data for event in events if isinstance(event, Chunk))
    assert isinstance(events[-1], Result) and events[-1].total_bytes == len(data) > 0
    assert len(list(av.open(io.BytesIO(data)).decode(video=0))) == header.num_frames
