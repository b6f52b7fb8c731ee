"""--compile: parts compiled before SERVING through real servers, the same output as eager, no recompilation under
mixed batch sizes, a part that cannot compile served eagerly, and the restart that takes the cached decision."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from imagewire.client import AsyncCaptionClient

from captioner.app import CaptionerApp
from captioner.backend import GenerationOptions
from captioner.families import load_captioner
from captioner.families.base import DECODER_PART
from captioner.limits import EngineLimits
from captioner.training.shapes import draw, random_scene
from imagewire_serving import compiling, packages
from imagewire_serving.tuning import Run
from tests.scripted import SPLIT, ScriptedParts, caption_alone_then_a_full_batch, scripted
from tests.support import aged, captioner_app, serving, solid

SHAPES_MODEL = Path(__file__).resolve().parents[1] / "captioner" / "models" / "shapes-blip"
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (20, 20, 20), (240, 240, 240)]
LIMITS = EngineLimits(default_max_new_tokens=6, max_batch_size=4)


@pytest.fixture(scope="module")
def package_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packages")


@pytest.fixture
def shared_packages(package_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The compiled parts' packages kept across this module's tests, as replicas share a compile cache: a call
    shape another test built is loaded (each test keeps its own decisions)."""
    configure = packages.configure
    monkeypatch.setattr(packages, "configure", lambda directory: configure(package_store if directory else None))
    return package_store


def recompiles(app: Any) -> float:
    return float(app.metrics.registry.get_sample_value("imagewire_recompiles"))


# Half the requests with a caption prefix, so a batch mixes rows of one start token and of several.
PROMPTS = ["", "a picture of"] * (len(COLOURS) // 2)
PARTS = ["vision encoder", "text decoder"]


async def captions(app: Any) -> tuple[list[str], Any]:
    """Every colour captioned alone, then all at once (batches of several sizes, prompts mixed), then one longer
    caption and one with beams: the captions and the model."""
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncCaptionClient(server.address, timeout=120) as client:
        info = (await client.list_models()).models[0]
        alone = [(await client.caption(solid(colour), prompt=prompt)).text
                 for colour, prompt in zip(COLOURS, PROMPTS, strict=True)]
        together = await asyncio.gather(*(client.caption(solid(colour), prompt=prompt)
                                          for colour, prompt in zip(COLOURS, PROMPTS, strict=True)))
        assert [result.text for result in together] == alone  # a caption does not depend on its batch
        assert recompiles(app) == 0  # every batch size ran code compiled before SERVING
        longer = await client.caption(solid(COLOURS[0]), max_new_tokens=40)
        beams = await client.caption(solid(COLOURS[1]), num_beams=3)
    return [*alone, longer.text, beams.text], info


@pytest.mark.timeout(900)
async def test_a_compiled_vision_encoder_serves_the_captions_of_eager_and_a_restart_reuses_the_decision(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, shared_packages: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    eager, eager_info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                     compile="off"))
    assert list(eager_info.compiled_parts) == [] and "--compile off" in eager_info.choice
    made = packages.made()
    compiled, info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                  compile="on", compile_cache=tmp_path))
    assert list(info.compiled_parts) == PARTS
    assert "float32 compiled" not in info.choice and "(compiled: vision encoder, text decoder)" in info.choice
    assert compiled == eager
    # On the CPU, each part's call shapes are packages (a lone request, several rows; the decoder's first token and
    # later steps), built (or loaded, where another test of this module built them), and the restart loads them
    # all: it compiles nothing.
    assert packages.made() - made >= 6
    built, loaded = packages.MADE["built"], packages.MADE["loaded"]
    # The restart keeps the cache to a limit below its own packages: it removes another model's, unused for two
    # days, and keeps its own.
    stale = aged(shared_packages / "another-model.pt2", hours=48, size=1000)
    kept = set(shared_packages.glob("*.pt2")) - {stale}
    # Before SERVING, the restart loads its packages with a lone caption and a batch of two, not the largest batch:
    # one package serves every batch of two or more (and the captions below, in batches up to 4, load no other).
    probed: list[int] = []
    probe = CaptionerApp._default_batch
    monkeypatch.setattr(CaptionerApp, "_default_batch",
                        lambda self, backend, size: probed.append(size) or probe(self, backend, size=size))
    with caplog.at_level(logging.INFO, logger="imagewire_serving"):
        again, again_info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                         compile="on", compile_cache=tmp_path,
                                                         compile_cache_max_gb=1e-6))
    assert "decided at an earlier start" in caplog.text
    assert list(again_info.compiled_parts) == PARTS and again == eager
    assert packages.MADE["built"] == built and packages.MADE["loaded"] - loaded >= 6
    assert not stale.exists() and set(shared_packages.glob("*.pt2")) == kept
    assert probed == [1, 2]
    assert "compile cache: removed 1 packages unused the longest" in caplog.text


@pytest.mark.timeout(900)
async def test_a_part_that_cannot_compile_runs_eagerly_with_one_line_saying_why(
    tiny_caption_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(*_: Any, **__: Any) -> Any:
        raise RuntimeError("no C++ compiler on this host")

    # Neither a package (the CPU's first choice) nor torch.compile can be built.
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiler)
    monkeypatch.setattr(compiling, "compile_options", lambda device: {"backend": no_compiler})
    with caplog.at_level(logging.WARNING, logger="imagewire_serving"):
        texts, info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cpu", dtype="float32",
                                                   compile="on", compile_cache=tmp_path))
    assert all(texts) and list(info.compiled_parts) == []
    for stage in ("cannot package", "cannot compile"):
        lines = [r.getMessage() for r in caplog.records if stage in r.getMessage()]
        # One line per part and stage, each naming the part and why.
        assert len(lines) == 2 and all("no C++ compiler on this host" in line for line in lines)
        assert sorted(line.split(":")[0] for line in lines) == sorted(PARTS)


def test_a_part_compiled_up_to_a_batch_size_runs_larger_batches_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch is read from the call's main input (input_ids here), not from another one-dimensional tensor
    passed first (a cache position)."""
    graphs: list[torch.fx.GraphModule] = []

    def counting(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        graphs.append(graph)
        return graph.forward

    class Step(torch.nn.Module):
        def forward(self, cache_position: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
            return input_ids * 2 + cache_position.sum()

    monkeypatch.setattr(compiling, "compile_options", lambda device: {"backend": counting})
    monkeypatch.setattr(packages, "_DIRECTORY", None)  # torch.compile, whose graphs the backend counts
    module = Step()
    part = compiling.Part("step", module, batch_dim=True)
    part.compile(torch.device("cpu"))
    part.use(compiled=True, up_to=1)
    assert (part.runs_compiled_for(1), part.runs_compiled_for(4), part.runs_compiled_for(None)) == (True, False, False)
    position = torch.zeros(1)
    assert torch.equal(module(cache_position=position, input_ids=torch.ones(4, 3)), torch.full((4, 3), 2.0))
    assert graphs == []  # a batch of four: eager
    assert torch.equal(module(cache_position=position, input_ids=torch.ones(1, 3)), torch.full((1, 3), 2.0))
    assert len(graphs) == 1  # a batch of one: compiled
    part.use(compiled=False)
    assert (part.compiled, part.up_to, part.runs_compiled_for(1)) == (False, None, False)


@pytest.mark.timeout(900)
def test_each_call_of_the_compiled_decoder_captions_its_own_image(tmp_path: Path, shared_packages: Path) -> None:
    """Each caption runs over a static KV cache of its own: the trained shapes captioner's captions of different
    scenes, one after another and batched, equal eager's (compiled steps that kept the first call's cache would
    read the first scene's image and write past its cache's end)."""
    cpu = torch.device("cpu")
    backend = load_captioner(str(SHAPES_MODEL), cpu, torch.float32)
    side = int(backend.model.config.vision_config.image_size)
    scenes = [draw(random_scene(random.Random(seed)), side) for seed in range(4)]
    options = GenerationOptions(max_new_tokens=20, num_beams=1)
    eager = [backend.generate([scene], [""], options)[0] for scene in scenes]
    assert len(set(eager)) == len(scenes)  # four different captions to tell apart
    compiling.configure(tmp_path, cpu)
    (decoder,) = [part for part in backend.compile_parts() if part.name == DECODER_PART]
    decoder.compile(cpu)
    assert [backend.generate([scene], [""], options)[0] for scene in scenes] == eager
    assert backend.generate(scenes, [""] * len(scenes), options) == eager
    assert decoder.compiled and decoder.failed is None


@pytest.mark.cuda
@pytest.mark.timeout(900)
async def test_on_cuda_the_vision_encoder_compiles_autotuned_and_serves_the_captions_of_eager(
    tiny_caption_model: str, tmp_path: Path
) -> None:
    eager, _ = await captions(captioner_app(tiny_caption_model, LIMITS, device="cuda:0", dtype="float32",
                                            compile="off"))
    compiled, info = await captions(captioner_app(tiny_caption_model, LIMITS, device="cuda:0", dtype="float32",
                                                  compile="on", compile_cache=tmp_path))
    assert list(info.compiled_parts) == PARTS and compiled == eager


@pytest.mark.timeout(900)
async def test_both_copies_compile_before_serving_and_serve_their_batches_without_recompiling(
    tiny_caption_model: str, tmp_path: Path, shared_packages: Path
) -> None:
    """Two copies (float32 for a lone request, bfloat16 for batches: scripted timings), --compile on: each copy's
    vision encoder is compiled before SERVING, and a lone request and a full batch compile nothing more."""
    app = scripted(tiny_caption_model, tmp_path, SPLIT, compile_mode="on")
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncCaptionClient(server.address, timeout=120) as client:
        info = (await client.list_models()).models[0]
        responses = await caption_alone_then_a_full_batch(app, client)
        assert recompiles(app) == 0
    decision = app.decisions[info.model_id]
    assert decision.small is not None and decision.small.dtype == "float32"
    assert decision.small.compiled_parts == tuple(PARTS) and list(info.compiled_parts) == PARTS
    assert [r.batch_size for r in responses] == [1, 1, 4, 4, 4, 4] and all(r.text for r in responses)


def probe_runs(alone: tuple[float, float, float], batch: tuple[float, float, float]) -> tuple[Run, Run]:
    """A variant's two probes: (whole, vision encoder, text decoder) seconds of each."""
    return tuple(Run(whole, {"vision encoder": encoder, DECODER_PART: decoder})  # type: ignore[return-value]
                 for whole, encoder, decoder in (alone, batch))


# The small preset in bfloat16 on an AVX512-BF16 EPYC (bench/README.md): compiled, the vision encoder gains 7-34%,
# the decoder 1.68x alone and 1.04x in a full batch.
DECODER_FASTER_ALONE = {
    ("float32", False): probe_runs((0.169, 0.0325, 0.127), (0.607, 0.385, 0.195)),
    ("float32", True): probe_runs((0.117, 0.0282, 0.0755), (0.517, 0.288, 0.188)),
}


@pytest.mark.timeout(900)
async def test_a_decoder_faster_compiled_only_alone_runs_compiled_for_lone_requests_and_a_restart_keeps_it(
    tiny_caption_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, shared_packages: Path
) -> None:
    """--compile auto (scripted timings): the decoder is compiled for a batch of one, on the same copy of the
    weights; a lone request's steps run compiled over a static cache, a full batch's eagerly; ListModels and each
    response say which; a restart takes the cached decision and runs alike."""
    settings = scripted(tiny_caption_model, tmp_path, {}).settings
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, dtype="float32"))
    app = ScriptedParts(settings, DECODER_FASTER_ALONE)
    static_cache_rows: list[int] = []
    async with serving(app, app.metrics, app.settings.server) as server, \
            AsyncCaptionClient(server.address, timeout=120) as client:
        info = (await client.list_models()).models[0]
        backend = app.engine().batcher("").backend
        cache = backend.static_cache
        backend.static_cache = lambda rows, positions: (static_cache_rows.append(rows), cache(rows, positions))[1]
        responses = await caption_alone_then_a_full_batch(app, client)
        assert recompiles(app) == 0
        ranges = app.engine().batch_ranges(info.model_id)
    assert [(r.first_batch_size, r.last_batch_size, r.dtype, list(r.compiled_parts)) for r in info.batch_ranges] \
        == [(2, 4, "float32", ["vision encoder"]), (1, 1, "float32", PARTS)]
    assert list(info.compiled_parts) == ["vision encoder"] and app.small_copies == {}
    assert "float32 (compiled: vision encoder, text decoder) for batch 1" in info.choice
    assert "float32 (compiled: vision encoder; at batch 1 text decoder) batch 1 0.1132 s" in info.choice
    batch_key, alone_key = (r.provenance_key for r in info.batch_ranges)
    assert info.provenance.key == batch_key != alone_key and list(info.provenance.compiled_parts) == ["vision encoder"]
    assert [(r.batch_size, r.provenance_key) for r in responses] == [(1, alone_key)] * 2 + [(4, batch_key)] * 4
    assert static_cache_rows == [1, 1] and all(r.text for r in responses)

    again = ScriptedParts(settings, {})  # nothing to measure: the decision is cached
    with caplog.at_level(logging.INFO, logger="imagewire_serving.deciding"):
        await again.load()
    try:
        assert again.measured == 0 and "decided at an earlier start" in caplog.text
        assert again.engine().batch_ranges(info.model_id) == ranges
    finally:
        await again.close()
