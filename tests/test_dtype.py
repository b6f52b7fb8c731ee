"""--dtype: what each value means on each device, the start-up errors, and auto choosing what measures fastest."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from imagewire.client import AsyncCaptionClient

from animator.__main__ import main as animator_main
from bench.caption.images import ImagePool
from bench.caption.limit import InProcess
from captioner import tiny
from captioner.__main__ import main as captioner_main
from captioner.app import CaptionerApp
from captioner.settings import CaptionerSettings
from imagewire_serving.device import Capabilities, DtypeChoice, choose_dtype, dtype_name
from imagewire_serving.metrics import Metrics
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


def test_auto_keeps_the_candidate_whose_default_request_measured_fastest(
    tiny_caption_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = CaptionerApp(CaptionerSettings(), Metrics())
    with caplog.at_level(logging.INFO, logger="imagewire_serving.app"):
        backend = app._load_fastest("tiny", tiny_caption_model, CPU, DtypeChoice((torch.float32, torch.bfloat16),
                                                                                "both, for the test"))
    record = next(r for r in caplog.records if "chose" in r.getMessage())
    times: dict[str, float] = record.args[2]
    assert set(times) == {"float32", "bfloat16"}
    # bfloat16 is kept only when it is clearly (10%) faster than float32.
    expected = "bfloat16" if times["bfloat16"] * 1.1 < times["float32"] else "float32"
    assert dtype_name(backend.dtype) == expected


@pytest.fixture(scope="module")
def small_model() -> Path:
    return tiny.ensure_model("small")


def test_auto_picks_what_the_bench_measures_fastest_on_this_machine(small_model: Path) -> None:
    """The caption bench's in-process model, one image at a time in every dtype the CPU runs, against auto."""
    pool = ImagePool(4, 224)
    measured: dict[str, float] = {}
    for name in ("float32", "bfloat16", "float16"):
        model = InProcess(small_model, "cpu", name, max_new_tokens=8)
        model.generate(pool.decoded(1))
        measured[name] = min(model.generate(pool.decoded(1)) for _ in range(2))
    choice = choose_dtype("auto", CPU)
    if choice.timed:
        app = CaptionerApp(CaptionerSettings(), Metrics())
        picked = dtype_name(app._load_fastest("small", str(small_model), CPU, choice).dtype)
    else:
        picked = dtype_name(choice.candidates[0])
    fastest = min(measured, key=measured.__getitem__)
    # Within the tolerance auto itself allows float32 (10%), and the noise of a shared machine.
    assert measured[picked] <= 1.25 * measured[fastest], (picked, measured)
