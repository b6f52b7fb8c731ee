"""What only a GPU shows: dtypes on CUDA, real out-of-memory, the warm-up at the default request's size, and
``--cpu-offload`` after a stopped generation. Every test needs a CUDA device (marker ``cuda``)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from imagewire.client import AsyncAnimateClient, AsyncCaptionClient, ImagewireError, Progress, Stage

from animator import tiny as animator_tiny
from animator.app import AnimatorApp
from animator.families.base import DEFAULTS_FILE
from animator.limits import EngineLimits as AnimateLimits
from imagewire_serving import errors
from tests.gates import wait_until
from tests.support import animator_app, captioner_app, serving, solid

pytestmark = [pytest.mark.cuda, pytest.mark.asyncio(loop_scope="session")]

SMALL_VIDEO = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 2, "decode_chunk_size": 2}
# Within the limits below, and far beyond what a tiny SVD needs at the default size.
HUGE_VIDEO = {"width": 1024, "height": 1024, "num_frames": 48, "num_inference_steps": 1, "decode_chunk_size": 48}


@contextlib.contextmanager
def memory_cap(extra_bytes: int) -> Iterator[None]:
    """Cap this process's CUDA caching allocator at what is allocated now plus ``extra_bytes``."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + extra_bytes) / total))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def animator(model: str, *, cpu_offload: bool = False) -> AnimatorApp:
    limits = AnimateLimits(max_num_frames=48, max_num_inference_steps=60)
    return animator_app(model, limits, cpu_offload=cpu_offload, device="cuda:0")


async def test_auto_is_float16_on_cuda_and_bfloat16_runs_where_the_gpu_has_it(tiny_caption_model: str) -> None:
    specs = ["auto", "bfloat16"] if torch.cuda.is_bf16_supported(including_emulation=False) else ["auto"]
    for spec, expected in zip(specs, ["float16", "bfloat16"]):
        app = captioner_app(tiny_caption_model, device="cuda:0", dtype=spec)
        async with serving(app, app.metrics, app.settings.server) as server, \
                AsyncCaptionClient(server.address, timeout=60) as client:
            assert (await client.list_models()).models[0].dtype == expected
            assert (await client.caption(solid())).text


async def test_cuda_out_of_memory_is_resource_exhausted_and_the_memory_is_released(tmp_path: Path) -> None:
    app = animator(str(animator_tiny.ensure_model("tiny")))
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncAnimateClient(server.address, timeout=600) as client:
        await client.animate_to_file(solid(), tmp_path / "video.mp4", **SMALL_VIDEO)
        idle = torch.cuda.memory_allocated()
        with memory_cap(512 * 1024 * 1024):
            with pytest.raises(ImagewireError) as caught:
                async for _ in client.animate(solid(), **HUGE_VIDEO):
                    pass
            assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "num_frames" in caught.value.message
            assert torch.cuda.memory_allocated() <= idle + 16 * 1024 * 1024
            assert torch.cuda.memory_reserved() <= torch.cuda.memory_allocated() + 64 * 1024 * 1024  # emptied
            result = await client.animate_to_file(solid(), tmp_path / "video.mp4", **SMALL_VIDEO)
            assert result.total_bytes > 0
        assert app.engine().stats.runs_failed == 1


async def test_a_gpu_too_small_for_the_default_request_fails_at_start_up(tmp_path: Path) -> None:
    model = tmp_path / "svd-with-large-defaults"
    shutil.copytree(animator_tiny.ensure_model("tiny"), model)
    (model / DEFAULTS_FILE).write_text(json.dumps({"width": 1024, "height": 1024, "num_frames": 48,
                                                   "decode_chunk_size": 48}))
    app = animator(str(model))
    with memory_cap(512 * 1024 * 1024), pytest.raises(errors.OutOfMemory, match="default request does not fit"):
        await app.load()


async def test_cpu_offload_after_a_stopped_generation_puts_the_components_back_on_the_cpu(tmp_path: Path) -> None:
    app = animator(str(animator_tiny.ensure_model("tiny")), cpu_offload=True)
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncAnimateClient(server.address, timeout=600) as client:
        pipeline = app.engine().backends[0].pipeline
        stream = client.animate(solid(), **{**SMALL_VIDEO, "num_inference_steps": 60})
        async for event in stream:
            if isinstance(event, Progress) and event.stage is Stage.DENOISE:
                break
        await stream.aclose()
        await wait_until(lambda: app.engine().stats.runs_stopped == 1)
        assert next(pipeline.unet.parameters()).device.type == "cpu"
        assert torch.cuda.memory_allocated() < 64 * 1024 * 1024
        result = await client.animate_to_file(solid(), tmp_path / "video.mp4", **SMALL_VIDEO)
        assert result.total_bytes > 0
