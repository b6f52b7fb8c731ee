"""--dtype: what each value means on each device, the start-up errors, and auto choosing what measures fastest."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from imagewire.client import AsyncCaptionClient

from animator.__main__ import main as animator_main
from captioner.__main__ import main as captioner_main
from captioner.app import SHIPPED_MODEL
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from captioner.training.shapes import make_example
from imagewire_serving.device import Capabilities, DtypeChoice, choose_dtype, dtype_name
from imagewire_serving.settings import ServerSettings
from tests.scripted import SPLIT, ScriptedTimes, batches_run, caption_alone_then_a_full_batch, scripted
from tests.support import captioner_app, png, serving, solid

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
    with caplog.at_level(logging.INFO, logger="imagewire_serving.deciding"):
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
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.deciding"):
        backend = app._load_decided("tiny", tiny_caption_model, CPU, choice)
    assert backend.dtype == torch.float32
    assert "does not run in bfloat16" in caplog.text and "not implemented for 'BFloat16'" in caplog.text


async def test_a_lone_request_runs_on_the_float32_copy_and_a_full_batch_on_the_bfloat16_one(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = scripted(tiny_caption_model, tmp_path, SPLIT)
    with caplog.at_level(logging.INFO, logger="imagewire_serving.deciding"):
        async with serving(app, app.metrics, app.settings.server) as server, \
                AsyncCaptionClient(server.address, timeout=60) as client:
            info = (await client.list_models()).models[0]
            lone, blocker, *full = await caption_alone_then_a_full_batch(app, client)
    ranges = [(r.first_batch_size, r.last_batch_size, r.dtype) for r in info.batch_ranges]
    assert ranges == [(2, 4, "bfloat16"), (1, 1, "float32")]
    assert info.dtype == "bfloat16" and info.provenance.key == info.batch_ranges[0].provenance_key
    assert info.choice.startswith("bfloat16 for batches 2-4, float32 for batch 1 (both copies fit: ")
    assert "bfloat16 for batches 2-4, float32 for batch 1 (both copies fit" in caplog.text
    # Which copy ran each batch: the response's provenance key names it, and the metric counts it.
    keys = {r.dtype: r.provenance_key for r in info.batch_ranges}
    assert keys["float32"] != keys["bfloat16"]
    assert (lone.batch_size, lone.provenance_key) == (blocker.batch_size, blocker.provenance_key) \
        == (1, keys["float32"])
    assert {(r.batch_size, r.provenance_key) for r in full} == {(4, keys["bfloat16"])}
    assert all(r.text for r in (lone, *full))
    assert (batches_run(app, "float32"), batches_run(app, "bfloat16")) == (2, 1)


async def test_two_copies_that_do_not_fit_leave_one_dtype_chosen_for_throughput(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same timings, but no memory free beside one copy: bfloat16 for every batch, and the log says why."""
    app = scripted(tiny_caption_model, tmp_path, SPLIT, free_memory=lambda _: 0)
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.deciding"):
        async with serving(app, app.metrics, app.settings.server) as server, \
                AsyncCaptionClient(server.address, timeout=60) as client:
            info = (await client.list_models()).models[0]
            responses = await caption_alone_then_a_full_batch(app, client)
    assert [(r.first_batch_size, r.last_batch_size, r.dtype) for r in info.batch_ranges] == [(1, 4, "bfloat16")]
    why = "bfloat16 for every batch, chosen for throughput: a second copy (float32 for batch 1) does not fit"
    assert info.choice.startswith(why) and why in caplog.text
    assert {r.provenance_key for r in responses} == {info.provenance.key}
    assert app.small_copies == {} and batches_run(app, "float32") == 0


@pytest.mark.parametrize("failing", ["float32", "bfloat16"])
@pytest.mark.parametrize("error", ["operation", "memory"])
def test_a_dtype_that_fails_leaves_the_other_serving_every_batch(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, failing: str, error: str
) -> None:
    """The two-copy timings, but one dtype cannot run an operation, or runs out of memory: the other serves."""

    class Failing(ScriptedTimes):
        def load_backend(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> Any:
            backend = super().load_backend(model_id, source, device, dtype)
            if dtype_name(dtype) == failing:
                def refuse(*_: object) -> None:
                    if error == "memory":
                        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (the test)")
                    raise RuntimeError(f"\"addmm_impl_cpu_\" not implemented for '{failing}'")
                backend.model.vision_model.register_forward_pre_hook(refuse)
            return backend

    app = Failing(scripted(tiny_caption_model, tmp_path, {}).settings, SPLIT)
    choice = DtypeChoice((torch.float32, torch.bfloat16), "both, for the test")
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.deciding"):
        backend = app._load_decided("tiny", tiny_caption_model, CPU, choice)
    other = ({"float32", "bfloat16"} - {failing}).pop()
    assert dtype_name(backend.dtype) == other and app.small_copies == {}
    assert app.decisions["tiny"].small is None and app.decisions["tiny"].dtype == other
    why = "does not fit in memory" if error == "memory" else "does not run"
    assert f"{why} in {failing}" in caplog.text


async def test_a_restart_takes_the_cached_two_range_decision_and_a_second_copy_that_no_longer_loads_is_dropped(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = scripted(tiny_caption_model, tmp_path, SPLIT)
    await first.load()
    ranges = first.engine().batch_ranges(first.engine().default_model_id)
    await first.close()
    assert [(r.first_batch_size, r.last_batch_size, r.dtype) for r in ranges] == [(2, 4, "bfloat16"), (1, 1, "float32")]

    # Timings that now say otherwise: nothing is measured, and both copies are loaded as decided.
    second = scripted(tiny_caption_model, tmp_path, {"float32": 0.004, "bfloat16": 0.010})
    with caplog.at_level(logging.INFO, logger="imagewire_serving.deciding"):
        await second.load()
    await second.close()
    assert second.measured == 0 and "decided at an earlier start" in caplog.text
    assert second.engine().batch_ranges(second.engine().default_model_id) == ranges

    # A start where the float32 copy runs out of memory while loading serves bfloat16 alone, saying why.
    class NoRoom(ScriptedTimes):
        def load_backend(self, model_id: str, source: str, device: torch.device, dtype: torch.dtype) -> Any:
            if dtype == torch.float32:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (the test)")
            return super().load_backend(model_id, source, device, dtype)

    third = NoRoom(second.settings, SPLIT)
    await third.load()
    await third.close()
    assert [(r.first_batch_size, r.last_batch_size, r.dtype)
            for r in third.engine().batch_ranges(third.engine().default_model_id)] == [(1, 4, "bfloat16")]
    assert "loading it ran out of memory" in third.decisions[third.engine().default_model_id].reason


async def test_each_copy_of_the_shapes_model_names_fresh_scenes_and_they_agree(tmp_path: Path) -> None:
    """The trained shapes model with two copies: captions of lone requests (float32) and of batches (bfloat16)
    both name fresh scenes right, and agree with each other within the dtype accuracy bound (docs/hardware.md)."""
    settings = CaptionerSettings(server=ServerSettings(port=0, device="cpu", models=(str(SHIPPED_MODEL),),
                                                       compile_cache=tmp_path),
                                 limits=EngineLimits(max_batch_size=4, max_batch_delay_ms=50))
    app = ScriptedTimes(settings, SPLIT)
    examples = [make_example(seed, max_shapes=1) for seed in range(30_000, 30_040)]
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncCaptionClient(server.address, timeout=120) as client:
        keys = {r.dtype: r.provenance_key for r in (await client.list_models()).models[0].batch_ranges}
        alone = [await client.caption(png(image)) for image, _ in examples]
        together = await asyncio.gather(*(client.caption(png(image)) for image, _ in examples))
    assert {r.provenance_key for r in alone} == {keys["float32"]}
    batched = [(lone, other, scene) for lone, other, (_, scene) in zip(alone, together, examples, strict=True)
               if other.provenance_key == keys["bfloat16"]]
    assert len(batched) >= len(examples) // 2
    for run in ([(lone, scene) for lone, _, scene in batched], [(other, scene) for _, other, scene in batched]):
        named = sum(all(f"{s.colour} {s.shape}" in result.text for s in scene.shapes) for result, scene in run)
        assert named >= 0.95 * len(run)
    assert sum(lone.text == other.text for lone, other, _ in batched) >= 0.95 * len(batched)
