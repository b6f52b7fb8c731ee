"""A captioner whose timings are scripted (its probes still run for real, in every dtype): the timed paths of
--dtype auto and --compile auto on every CPU, AVX2-only included."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from imagewire.client import AsyncCaptionClient

from captioner.app import CaptionerApp
from captioner.backend import CaptionBackend
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.compiling import Part
from imagewire_serving.device import Capabilities, dtype_name
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServerSettings
from imagewire_serving.tuning import Run
from tests.gates import gate, wait_until
from tests.support import solid


class ScriptedTimes(CaptionerApp):
    """A captioner whose probes all run for real, in every dtype and variant, but whose timings are scripted per
    dtype (seconds of the batch-1 probe, the batch probe taking 8x; or seconds of each probe), off by up to
    ``noise`` either way. ``free_memory``: the device's free bytes (default: plenty)."""

    def __init__(self, settings: CaptionerSettings, seconds: Mapping[str, float | tuple[float, float]],
                 noise: float = 0.0, seed: int = 0, free_memory: Callable[[torch.device], int] = lambda _: 2**40,
                 ) -> None:
        super().__init__(settings, Metrics(), capabilities=Capabilities(avx512_bf16=True), free_memory=free_memory)
        self.seconds, self.noise, self.rng = seconds, noise, random.Random(seed)
        self.measured = 0

    def _time_probes(self, backend: CaptionBackend, parts: Sequence[Part], device: torch.device) -> dict[str, Run]:
        runs = super()._time_probes(backend, parts, device)
        self.measured += 1
        script = self.seconds[dtype_name(backend.dtype)]
        times = script if isinstance(script, tuple) else [script * 8**index for index in range(len(runs))]
        return {label: Run(seconds * self.rng.uniform(1 - self.noise, 1 + self.noise))
                for label, seconds in zip(runs, times, strict=True)}


class ScriptedParts(ScriptedTimes):
    """Scripted per variant and part: ``runs[dtype, compiled]`` is each probe's Run, the parts' times with it. Every
    part is tried compiled under --compile auto (the tiny models' parts are below its size threshold)."""

    def __init__(self, settings: CaptionerSettings, runs: Mapping[tuple[str, bool], Sequence[Run]]) -> None:
        super().__init__(settings, {})
        self.runs = runs

    @staticmethod
    def _worth_compiling(parts: Sequence[Part], mode: str) -> bool:
        return mode != "off"

    def _time_probes(self, backend: CaptionBackend, parts: Sequence[Part], device: torch.device) -> dict[str, Run]:
        real = CaptionerApp._time_probes(self, backend, parts, device)
        self.measured += 1
        script = self.runs[dtype_name(backend.dtype), any(part.compiled for part in parts)]
        return dict(zip(real, script, strict=True))


def scripted(model: str, cache: Path, seconds: Mapping[str, float | tuple[float, float]], compile_mode: str = "auto",
             **kwargs: Any) -> ScriptedTimes:
    """A ScriptedTimes captioner of ``model`` on the CPU: 4-token captions, batches of up to 4."""
    settings = CaptionerSettings(server=ServerSettings(port=0, device="cpu", models=(model,), compile_cache=cache,
                                                       compile=compile_mode),
                                 limits=EngineLimits(default_max_new_tokens=4, max_batch_size=4))
    return ScriptedTimes(settings, seconds, **kwargs)


# float32 2x faster alone, bfloat16 4x faster in a full batch (of 4): the case for two copies.
SPLIT = {"float32": (0.010, 0.200), "bfloat16": (0.020, 0.050)}
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


async def caption_alone_then_a_full_batch(app: ScriptedTimes, client: AsyncCaptionClient) -> list[Any]:
    """One caption alone, then a burst that forms a full batch behind a held one; every response, in order."""
    batcher = app.engine().batcher("")
    lone = await client.caption(solid())
    with gate(batcher.copy_for(1)) as held:
        blocker = asyncio.create_task(client.caption(solid((9, 9, 9))))
        await held.wait_entered()
        burst = [asyncio.create_task(client.caption(solid(colour))) for colour in COLOURS]
        await wait_until(lambda: batcher.queue_depth == len(COLOURS))
        held.release()
        full = await asyncio.gather(*burst)
        return [lone, await blocker, *full]


def batches_run(app: ScriptedTimes, dtype: str) -> float:
    model = app.engine().backends[0].model_id
    return app.metrics.registry.get_sample_value("imagewire_caption_batches_total",
                                                 {"model": model, "dtype": dtype}) or 0.0
