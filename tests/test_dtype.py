"""--dtype: what each value means on each device, the start-up errors, and auto choosing what measures fastest."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from imagewire.client import AsyncCaptionClient

from animator.__main__ import main as animator_main
from captioner.__main__ import main as captioner_main
from captioner.app import CaptionerApp
from captioner.backend import CaptionBackend
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.compiling import Part
from imagewire_serving.device import Capabilities, DtypeChoice, choose_dtype, dtype_name
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServerSettings
from imagewire_serving.tuning import Run
from tests.support import captioner_app, serving, solid

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)


def test_auto_is_float32_on_a_cpu_without_low_precision_arithmetic() -> None:
    choice = choose_dtype("auto", CPU, Capabilities())
    assert choice.candidates == (torch.float32,) and not choice.timed
    assert "float32" in choice.reason and "AVX512-BF16" in choice.reason


def test_auto_times_the_native_dtypes_against_float32_on_a_cpu_that_has_them() -> None:
    assert choose_dtype("auto", CPU, Capabilities(avx512_bf16=True)).candidates == (torch.float32, torch.bfloat16)
    choice = choose_dtype("auto", CPU, Capabilities(amx_bf16=True, amx_fp16=True))
    assert choice.candidates == (torch.float32, torch.bfloat16, torch.float16) and choice.timed
    assert "AMX-BF16" in choice.reason


def test_auto_is_float16_on_cuda_and_an_explicit_dtype_is_taken_as_asked() -> None:
    assert choose_dtype("auto", GPU, Capabilities()).candidates == (torch.float16,)
    assert choose_dtype("bfloat16", GPU, Capabilities(cuda_bf16=True)).candidates == (torch.bfloat16,)
    assert choose_dtype("float32", CPU, Capabilities()).candidates == (torch.float32,)


def test_bfloat16_on_a_gpu_without_it_is_a_start_up_error_naming_the_flag() -> None:
    with pytest.raises(ValueError, match=r"--dtype bfloat16: .*float16"):
        choose_dtype("bfloat16", GPU, Capabilities(cuda_bf16=False))


def test_a_dtype_the_cpu_only_emulates_runs_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.device"):
        assert choose_dtype("bfloat16", CPU, Capabilities()).candidates == (torch.bfloat16,)
    assert "several times slower" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.device"):
        choose_dtype("bfloat16", CPU, Capabilities(avx512_bf16=True))
    assert not caplog.text


def test_an_unknown_dtype_exits_2_naming_the_flag(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert captioner_main(["--dtype", "float64"]) == 2
    assert "--dtype must be one of auto, float32, bfloat16, float16" in capsys.readouterr().err
    monkeypatch.setenv("IMAGEWIRE_ANIMATOR_DTYPE", "int8")
    assert animator_main([]) == 2
    # The value came from the variable: the message names it (and its flag).
    assert "IMAGEWIRE_ANIMATOR_DTYPE (--dtype) must be one of" in capsys.readouterr().err


@pytest.mark.asyncio(loop_scope="session")
async def test_the_captioner_serves_in_the_dtype_asked_and_lists_it(tiny_caption_model: str) -> None:
    for spec in ("bfloat16", "auto"):
        app = captioner_app(tiny_caption_model, device="cpu", dtype=spec)
        async with serving(app, app.metrics, app.settings.server) as server, \
                AsyncCaptionClient(server.address, timeout=60) as client:
            listed = (await client.list_models()).models[0].dtype
            assert (await client.caption(solid())).text
        expected = choose_dtype(spec, CPU)
        if not expected.timed:
            assert listed == dtype_name(expected.candidates[0])


class ScriptedTimes(CaptionerApp):
    """A captioner whose probes all run for real, in every dtype and variant, but whose timings are scripted per
    dtype (seconds of the batch-1 probe; the batch probe takes 8x), off by up to ``noise`` either way."""

    def __init__(self, settings: CaptionerSettings, seconds: dict[str, float], noise: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(settings, Metrics(), capabilities=Capabilities(avx512_bf16=True))
        self.seconds, self.noise, self.rng = seconds, noise, random.Random(seed)
        self.measured = 0

    def _time_probes(self, backend: CaptionBackend, parts: Sequence[Part], device: torch.device) -> dict[str, Run]:
        runs = super()._time_probes(backend, parts, device)
        self.measured += 1
        base = self.seconds[dtype_name(backend.dtype)]
        return {label: Run(base * 8**index * self.rng.uniform(1 - self.noise, 1 + self.noise))
                for index, label in enumerate(runs)}


def scripted(model: str, cache: Path, seconds: dict[str, float], **kwargs: Any) -> ScriptedTimes:
    settings = CaptionerSettings(server=ServerSettings(port=0, device="cpu", models=(model,), compile_cache=cache),
                                 limits=EngineLimits(default_max_new_tokens=4, max_batch_size=4))
    return ScriptedTimes(settings, seconds, **kwargs)


async def test_auto_serves_the_dtype_measured_clearly_faster_and_the_next_start_takes_the_decision(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On every CPU (its bfloat16 arithmetic injected): measured, chosen, listed with its reason, cached."""
    first = scripted(tiny_caption_model, tmp_path, {"float32": 0.010, "bfloat16": 0.004})
    async with serving(first, first.metrics, first.settings.server) as server, \
            AsyncCaptionClient(server.address, timeout=60) as client:
        info = (await client.list_models()).models[0]
        assert (await client.caption(solid())).text
    assert first.measured >= 2 * 3  # both dtypes, interleaved, three rounds at least
    assert info.dtype == "bfloat16" and info.choice.startswith("bfloat16 chosen")
    assert "float32 batch 1 0.0100 s, batch 4 0.0800 s" in info.choice
    assert list(info.compiled_parts) == []  # a tiny model's encoder is not worth compiling (auto)

    # A restart (or another replica sharing the cache directory) measures nothing and decides alike, even where
    # its own timings would now say otherwise.
    second = scripted(tiny_caption_model, tmp_path, {"float32": 0.004, "bfloat16": 0.010})
    with caplog.at_level(logging.INFO, logger="imagewire_serving.app"):
        await second.load()
    await second.close()
    assert second.measured == 0
    assert dtype_name(second.engine().backends[0].dtype) == "bfloat16"
    assert "decided at an earlier start" in caplog.text


def test_twenty_starts_under_noise_report_the_same_dtype(tiny_caption_model: str, tmp_path: Path) -> None:
    """Timings within noise of each other (bfloat16 5% faster, each off by up to 15%): every start, each with
    its own cache directory and its own noise, keeps float32; and with a shared cache all take the first one's
    decision whatever their own noise."""
    choice = DtypeChoice((torch.float32, torch.bfloat16), "both, for the test")
    alone = set()
    for seed in range(20):
        app = scripted(tiny_caption_model, tmp_path / str(seed), {"float32": 0.010, "bfloat16": 0.0095},
                       noise=0.15, seed=seed)
        alone.add(dtype_name(app._load_decided("tiny", tiny_caption_model, CPU, choice).dtype))
    assert alone == {"float32"}
    shared = set()
    for seed in range(20):
        app = scripted(tiny_caption_model, tmp_path / "shared", {"float32": 0.010, "bfloat16": 0.009},
                       noise=0.5, seed=seed)
        shared.add(dtype_name(app._load_decided("tiny", tiny_caption_model, CPU, choice).dtype))
    assert len(shared) == 1


def test_a_dtype_that_cannot_run_an_operation_is_skipped_with_a_warning(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class NoBfloat16(ScriptedTimes):
        def load_backend(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> Any:
            backend = super().load_backend(model_id, source, device, dtype)
            if dtype == torch.bfloat16:
                def refuse(*_: object) -> None:
                    raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'BFloat16'")
                backend.model.vision_model.register_forward_pre_hook(refuse)
            return backend

    app = NoBfloat16(scripted(tiny_caption_model, tmp_path, {}).settings, {"float32": 0.01, "bfloat16": 0.001})
    choice = DtypeChoice((torch.float32, torch.bfloat16), "both, for the test")
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.app"):
        backend = app._load_decided("tiny", tiny_caption_model, CPU, choice)
    assert backend.dtype == torch.float32
    assert "does not run in bfloat16" in caplog.text and "not implemented for 'BFloat16'" in caplog.text
