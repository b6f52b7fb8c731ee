"""Device out-of-memory through real servers: RESOURCE_EXHAUSTED with a hint, the memory released, serving on.

On the CPU the real ``torch.OutOfMemoryError`` is raised from inside the real model (a forward pre-hook on one of
its modules, armed for chosen calls), so everything around it (the backend, the engine, the status mapping, the
client) is the production code. The CUDA tests run out of real GPU memory.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from imagewire.client import AsyncAnimateClient, AsyncCaptionClient, ImagewireError, Progress, Stage

from animator import tiny as animator_tiny
from animator.limits import EngineLimits as AnimateLimits
from captioner.app import CaptionerApp
from captioner.engine import CaptionEngine
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving import errors, memory
from imagewire_serving.device import Capabilities
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServerSettings
from tests.gates import gate, wait_until
from tests.support import animator_app, captioner_app, serving, solid

pytestmark = pytest.mark.asyncio(loop_scope="session")

SMALL_VIDEO = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 2, "decode_chunk_size": 2}


class OutOfMemory:
    """Raises the real torch.OutOfMemoryError from a module's forward while ``fail(batch size)`` says so; keeps a
    weak reference to each failed call's input, to show its memory is released."""

    def __init__(self, module: torch.nn.Module, fail: Callable[[int], bool]) -> None:
        self.fail = fail
        self.batch_sizes: list[int] = []
        self.failed_inputs: list[weakref.ref[torch.Tensor]] = []
        self._handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tensor = next(value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor))
        self.batch_sizes.append(tensor.shape[0])
        if self.fail(tensor.shape[0]):
            self.failed_inputs.append(weakref.ref(tensor))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (raised by the test)")

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def out_of_memory() -> Iterator[Callable[[torch.nn.Module, Callable[[int], bool]], OutOfMemory]]:
    installed: list[OutOfMemory] = []

    def install(module: torch.nn.Module, fail: Callable[[int], bool]) -> OutOfMemory:
        installed.append(OutOfMemory(module, fail))
        return installed[-1]

    yield install
    for hook in installed:
        hook.remove()


@pytest.fixture
def app(tiny_caption_model: str) -> CaptionerApp:
    """A captioner on the tiny model whose batch window lets concurrent test calls share a batch."""
    return captioner_app(tiny_caption_model, EngineLimits(default_max_new_tokens=4, max_batch_delay_ms=200),
                         device="cpu")


async def test_caption_out_of_memory_is_resource_exhausted_with_a_hint_and_the_engine_serves_on(
    app: CaptionerApp, out_of_memory: Callable[..., OutOfMemory]
) -> None:
    async with serving(app, app.metrics, app.settings.server) as server:
        engine: CaptionEngine = app.engine()
        backend = engine.batcher("").backend
        failures = iter([True])
        hook = out_of_memory(backend.model.vision_model, lambda _: next(failures, False))
        async with AsyncCaptionClient(server.address, timeout=60) as client:
            with pytest.raises(ImagewireError) as caught:
                await client.caption(solid())
            assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "ran out of memory" in caught.value.message and "num_beams" in caught.value.message
            # The failed call's tensors died with it (nothing kept its frames alive).
            assert hook.failed_inputs and all(ref() is None for ref in hook.failed_inputs)
            assert (await client.caption(solid())).text
        assert engine.stats.runs_failed == 1 and engine.stats.requests_completed == 1


async def test_a_caption_batch_out_of_memory_is_retried_in_halves(
    app: CaptionerApp, out_of_memory: Callable[..., OutOfMemory]
) -> None:
    async with serving(app, app.metrics, app.settings.server) as server:
        batcher = app.engine().batcher("")
        colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
        async with AsyncCaptionClient(server.address, timeout=60) as client:
            alone = [(await client.caption(solid(colour))).text for colour in colours]
            # Only single images fit: every batch of more fails and must be split down to them.
            hook = out_of_memory(batcher.backend.model.vision_model, lambda size: size > 1)
            with gate(batcher.backend) as held:
                blocker = asyncio.create_task(client.caption(solid((9, 9, 9))))
                await held.wait_entered()
                calls = [asyncio.create_task(client.caption(solid(colour))) for colour in colours]
                await wait_until(lambda: batcher.queue_depth == len(colours))
                held.release()
                captions = await asyncio.gather(*calls)
                await blocker
        assert [caption.text for caption in captions] == alone
        assert {caption.batch_size for caption in captions} == {len(colours)}
        assert hook.batch_sizes == [1, 4, 2, 1, 1, 2, 1, 1]


async def test_animate_out_of_memory_is_resource_exhausted_with_a_hint_and_the_engine_serves_on(
    one_torch_thread: None, out_of_memory: Callable[..., OutOfMemory], tmp_path: Path
) -> None:
    app = animator_app(str(animator_tiny.ensure_model("tiny")), AnimateLimits(max_num_frames=8), device="cpu")
    async with serving(app, app.metrics, app.settings.server) as server:
        engine = app.engine()
        failures = iter([True])
        pipeline = engine.backends[0].pipeline
        hook = out_of_memory(pipeline.unet, lambda _: next(failures, False))
        async with AsyncAnimateClient(server.address, timeout=120) as client:
            with pytest.raises(ImagewireError) as caught:
                async for _ in client.animate(solid(), **SMALL_VIDEO):
                    pass
            assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            for hint in ("width", "num_frames", "decode_chunk_size"):
                assert hint in caught.value.message
            assert all(ref() is None for ref in hook.failed_inputs)
            result = await client.animate_to_file(solid(), tmp_path / "after.mp4", **SMALL_VIDEO)
            assert result.total_bytes == (tmp_path / "after.mp4").stat().st_size > 0
        assert engine.stats.runs_failed == 1 and engine.stats.runs_completed == 1


@pytest.mark.parametrize("capabilities", [Capabilities(), Capabilities(avx512_bf16=True)],
                         ids=["float32 only", "bfloat16 timed"])
async def test_a_default_request_that_does_not_fit_fails_at_start_up(
    tiny_caption_model: str, capabilities: Capabilities, tmp_path: Path
) -> None:
    """The warm-up (or, with several dtypes to measure, the measuring) runs the default request: out of memory
    there is a start-up error naming what to change, not a dtype that 'does not run'."""

    class TooSmall(CaptionerApp):
        def load_backend(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> Any:
            backend = super().load_backend(model_id, source, device, dtype)
            OutOfMemory(backend.model.vision_model, lambda _: True)
            return backend

    app = TooSmall(CaptionerSettings(server=ServerSettings(port=0, device="cpu", models=(tiny_caption_model,),
                                                           compile_cache=tmp_path)),
                   Metrics(), capabilities=capabilities)
    with pytest.raises(errors.OutOfMemory, match="default request does not fit in the memory of cpu"):
        await app.load()
    with pytest.raises(errors.Unavailable):
        app.engine()


async def test_a_stopped_generation_frees_the_pipeline_model_hooks(
    one_torch_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = animator_app(str(animator_tiny.ensure_model("tiny")), AnimateLimits(max_num_inference_steps=60),
                       device="cpu")
    async with serving(app, app.metrics, app.settings.server) as server:
        engine = app.engine()
        pipeline = engine.backends[0].pipeline
        freed: list[int] = []
        free = pipeline.maybe_free_model_hooks
        monkeypatch.setattr(pipeline, "maybe_free_model_hooks", lambda: freed.append(1) or free())
        async with AsyncAnimateClient(server.address, timeout=120) as client:
            stream = client.animate(solid(), **{**SMALL_VIDEO, "num_inference_steps": 60})
            async for event in stream:
                if isinstance(event, Progress) and event.stage is Stage.DENOISE:
                    break  # leaving the stream cancels the call at the next denoising step
            await stream.aclose()
        await wait_until(lambda: engine.stats.runs_stopped == 1)
        # The pipeline never reached its own clean-up; the backend's finally did it.
        assert freed == [1]


async def test_the_memory_a_second_copy_is_judged_by() -> None:
    """A module's weights count each tensor once; the CPU's free memory is read; a run's memory on the CPU (where
    torch counts nothing) is the allowance given, without running it."""
    layer = torch.nn.Linear(8, 4)
    tied = torch.nn.Sequential(layer, layer)
    assert memory.tensor_bytes(tied) == memory.tensor_bytes(layer) == (8 * 4 + 4) * 4
    assert memory.tensor_bytes(layer.to(torch.bfloat16)) == (8 * 4 + 4) * 2
    assert memory.free_bytes(torch.device("cpu")) > 0
    ran: list[int] = []
    assert memory.run_bytes(torch.device("cpu"), lambda: ran.append(1), 1234) == 1234 and not ran
