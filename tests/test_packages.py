"""Compiled parts as AOTInductor packages (imagewire_serving.packages): one per call shape, every batch of several
rows sharing one, built once and loaded by a restart; a call that cannot be exported goes to torch.compile."""

from __future__ import annotations

import gc
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.utils._pytree as pytree
from transformers import BertConfig
from transformers.cache_utils import StaticCache

from imagewire_serving import compiling, deciding, package_calls, packages
from tests.support import aged


class Head(torch.nn.Module):
    """A part with a batch dimension and a keyword argument."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, pixel_values: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return torch.relu(self.linear(pixel_values)) * scale


def packaged(module: torch.nn.Module) -> compiling.Part:
    part = compiling.Part("head", module, batch_dim=True)
    part.compile(torch.device("cpu"))
    return part


def called_packaged(pixels: torch.Tensor) -> tuple[Head, compiling.Part]:
    """A Head packaged and called once on ``pixels`` (its package built, or loaded from the store)."""
    module = Head(seed=1)
    part = packaged(module)
    with torch.inference_mode():
        module(pixel_values=pixels)
    return module, part


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(packages, "_DIRECTORY", tmp_path / "packages")
    monkeypatch.setattr(packages, "MADE", packages.Counter())
    return tmp_path / "packages"


@pytest.mark.timeout(600)
def test_one_package_for_a_row_one_for_any_rows_and_a_restart_loads_them(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eager = Head(seed=1)
    module = Head(seed=1)
    packaged(module)
    inputs = {size: torch.randn(size, 8) for size in (1, 3, 5)}
    with torch.inference_mode():  # as the servers call their parts
        for pixels in inputs.values():
            assert torch.allclose(module(pixel_values=pixels, scale=2.0), eager(pixel_values=pixels, scale=2.0))
    assert packages.MADE == {"built": 2}  # a batch of one, and one for 3 and 5 rows
    assert len(list(store.glob("*.pt2"))) == 2 and not list(store.glob("*.partial*"))

    written: list[str] = []  # the same calls again find their runners without writing their call shapes
    with monkeypatch.context() as patched, torch.inference_mode():
        patched.setattr(packages, "call_shape", lambda *args: written.append("shape") or "")
        for pixels in inputs.values():
            assert torch.allclose(module(pixel_values=pixels, scale=2.0), eager(pixel_values=pixels, scale=2.0))
    assert written == [] and packages.MADE == {"built": 2}

    restarted = Head(seed=1)  # a new process's copy of the same weights
    packaged(restarted)
    with torch.inference_mode():
        for pixels in inputs.values():
            assert torch.allclose(restarted(pixel_values=pixels, scale=2.0), eager(pixel_values=pixels, scale=2.0))
    assert packages.MADE == {"built": 2, "loaded": 2}

    other = Head(seed=2)  # other weights: packages of their own, never the first model's
    packaged(other)
    with torch.inference_mode():
        assert torch.allclose(other(pixel_values=inputs[1], scale=2.0), Head(seed=2)(pixel_values=inputs[1], scale=2.0))
    assert packages.MADE == {"built": 3, "loaded": 2}


class Branching(torch.nn.Module):
    """Control flow on a tensor's value: torch.export cannot trace it (torch.compile breaks the graph there)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.sum() > 0:
            return pixel_values * 2
        return pixel_values - 1


@pytest.mark.timeout(600)
def test_a_call_that_cannot_be_exported_runs_through_torch_compile_with_one_line(
    store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    graphs: list[torch.fx.GraphModule] = []

    def counting(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(compiling, "compile_options", lambda device: {"backend": counting})
    module = Branching()
    part = packaged(module)
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.packages"):
        assert torch.equal(module(torch.ones(1, 3)), torch.full((1, 3), 2.0))
        assert torch.equal(module(-torch.ones(4, 3)), torch.full((4, 3), -2.0))
    lines = [record.getMessage() for record in caplog.records if record.name == "imagewire_serving.packages"]
    assert len(lines) == 1 and lines[0].startswith("head: cannot package (") and "torch.compile" in lines[0]
    assert graphs and part.compiled and part.failed is None and packages.MADE == {}


def shape(value: Any, batch: int | None) -> str:
    leaves, spec = pytree.tree_flatten(((), value))
    return package_calls.call_shape(spec, leaves, batch)


def cache(rows: int, length: int = 16) -> StaticCache:
    """A decoder's static KV cache of ``rows`` rows (its state, batch size included, is the pytree's context)."""
    static = StaticCache(config=BertConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1),
                         max_cache_len=length)
    static.early_initialization(rows, 2, 4, torch.float32, torch.device("cpu"))
    return static


def test_the_call_shape_names_every_batch_of_several_rows_alike_and_nothing_else() -> None:
    packages._register_caches(torch.nn.Module())

    def call(rows: int, width: int = 8, length: int = 16) -> dict[str, Any]:
        return {"pixel_values": torch.zeros(rows, width), "cache": cache(rows, length)}

    assert "batch_size" in shape(call(1), 1)  # the cache's state is in its shape
    assert shape(call(2), 2) == shape(call(7), 7) != shape(call(1), 1)
    assert shape(call(2), 2) != shape(call(2, width=9), 2)  # other sizes
    assert shape(call(3, length=3), 3) == shape(call(4, length=3), 4)  # the length, not the batch, is a constant
    stale = call(3)
    for layer in stale["cache"].layers:
        layer.batch_size = 5  # as a package returns it: its state when built, for a batch of 5
    assert shape(stale, 3) == shape(call(3), 3)
    assert shape(call(3, length=3), 3) != shape(call(3, length=4), 3)
    assert shape(call(2), None) != shape(call(3), None)  # no batch dimension: every size its own
    half = {"pixel_values": torch.zeros(2, 8, dtype=torch.bfloat16), "cache": cache(2)}
    assert shape(half, 2) != shape(call(2), 2)  # another dtype


def test_calls_with_one_seen_key_have_one_call_shape() -> None:
    packages._register_caches(torch.nn.Module())

    def key(value: Any, batch: int | None) -> Any:
        leaves, spec = pytree.tree_flatten(((), value))
        return package_calls.seen_key(spec, leaves, batch)

    calls = [({"pixel_values": torch.zeros(rows, width, dtype=dtype), "cache": cache(rows, length), "flag": flag}, rows)
             for rows in (1, 2, 3) for width in (8, 9) for length in (3, 4) for dtype in (torch.float32, torch.bfloat16)
             for flag in (1, True, 1.0)]
    keys = [key(value, rows) for value, rows in calls]
    assert keys == [key(value, rows) for value, rows in calls]  # a call made again has the key it had
    for (first, first_rows), first_key in zip(calls, keys, strict=True):
        for (second, second_rows), second_key in zip(calls, keys, strict=True):
            if first_key == second_key:
                assert shape(first, first_rows) == shape(second, second_rows)
    assert len(set(keys)) == len(calls)  # 1, True and 1.0 are three constants, as in the call shape
    assert key({"pixel_values": torch.zeros(1, 8), "options": bytearray(b"x")}, 1) is None  # cannot be hashed


class Step(torch.nn.Module):
    """A decoder's step: writes its keys and values into a static KV cache in place and returns the cache."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, hidden: torch.Tensor, cache: StaticCache) -> tuple[torch.Tensor, StaticCache]:
        keys = self.linear(hidden)
        cache.layers[0].update(keys, keys * 2)
        return keys.sum(), cache


@pytest.mark.timeout(600)
def test_a_cache_the_package_writes_in_place_is_returned_as_the_object_it_was_called_with(store: Path) -> None:
    packages._register_caches(torch.nn.Module())
    eager, module = Step(), Step()
    compiling.Part("step", module).compile(torch.device("cpu"))
    expected, given = cache(1), cache(1)
    with torch.inference_mode():
        for _ in range(3):
            hidden = torch.randn(1, 2, 1, 4)
            total, returned = module(hidden=hidden, cache=given)
            assert returned is given  # not rebuilt from its tensors: the caller's own cache, written in place
            assert torch.allclose(total, eager(hidden=hidden, cache=expected)[0])
    layer, reference = given.layers[0], expected.layers[0]
    assert torch.allclose(layer.keys, reference.keys) and torch.allclose(layer.values, reference.values)
    assert int(layer.cumulative_length) == int(reference.cumulative_length) == 3
    assert packages.MADE == {"built": 1}


@pytest.mark.timeout(600)
def test_an_unreadable_package_is_served_by_torch_compile_and_removed_for_the_next_start(
    store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pixels = torch.randn(1, 8)
    called_packaged(pixels)
    (package,) = store.glob("*.pt2")
    package.write_bytes(b"not a package")  # as a torch build that writes them otherwise might leave it

    monkeypatch.setattr(compiling, "compile_options", lambda device: {"backend": lambda graph, inputs: graph.forward})
    module = Head(seed=1)
    packaged(module)
    with caplog.at_level(logging.WARNING, logger="imagewire_serving.packages"), torch.inference_mode():
        assert torch.allclose(module(pixel_values=pixels), Head(seed=1)(pixel_values=pixels))
    lines = [record.getMessage() for record in caplog.records if record.name == "imagewire_serving.packages"]
    assert len(lines) == 1 and "cannot package" in lines[0]
    assert not package.exists() and packages.MADE == {"built": 1}


@pytest.mark.timeout(600)
def test_the_cache_keeps_to_its_limit_by_removing_the_packages_unused_the_longest(
    store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(packages, "_IN_USE", set())
    pixels = torch.randn(1, 8)
    called_packaged(pixels)
    (mine,) = store.glob("*.pt2")
    aged(mine, hours=100)  # in use by this process: kept, however long ago it was last used
    oldest = aged(store / "a-oldest.pt2", hours=48, size=4000)
    older = aged(store / "b-older.pt2", hours=24, size=3000)
    old = aged(store / "c-old.pt2", hours=2, size=2000)
    recent = aged(store / "d-recent.pt2", hours=0.5, size=50_000)  # another replica's, in the last hour: kept
    dead_build = aged(store / "tmpx.partial.pt2", hours=3, size=1000)
    building = aged(store / "tmpy.partial.pt2", hours=0.1, size=1000)
    total = sum(path.stat().st_size for path in store.glob("*.pt2"))

    with caplog.at_level(logging.INFO, logger="imagewire_serving.packages"):
        # Room for all but 5500 bytes: the dead build's scratch file, then the packages unused the longest.
        removed = packages.trim(total - 5500)
        assert removed == [dead_build, oldest, older]
        assert all(path.exists() for path in (mine, old, recent, building))
        assert "removed 3 packages unused the longest" in caplog.text
        assert packages.trim(1) == [old]  # what is left is in use or recent: the cache stays above the limit
        assert "over the limit" in caplog.text
    assert packages.trim(0) == []

    # A load is a use: a later start that loads the package renews it, and so keeps it.
    monkeypatch.setattr(packages, "_IN_USE", set())
    called_packaged(pixels)
    assert packages.MADE == {"built": 1, "loaded": 1}
    assert time.time() - mine.stat().st_mtime < 600
    monkeypatch.setattr(packages, "_IN_USE", set())
    assert packages.trim(1) == [] and mine.exists()


def test_a_read_only_cache_is_left_as_it_is(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packages, "_IN_USE", set())
    store.mkdir(parents=True)
    baked = aged(store / "baked.pt2", hours=24 * 400, size=1000)
    unlink = Path.unlink

    def refuse(path: Path, missing_ok: bool = False) -> None:
        if path.parent == store:
            raise PermissionError(13, "Read-only file system", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    assert packages.trim(1) == [] and baked.exists()


@pytest.mark.timeout(600)
def test_a_part_the_decision_leaves_eager_lets_its_packages_go(store: Path) -> None:
    pixels = torch.randn(1, 8)
    module, part = called_packaged(pixels)
    assert part._compiled is not None
    runner = weakref.ref(next(iter(part._compiled._runners.values())))  # the loaded package, with its weights
    deciding._use([part], every=(), small=None)
    gc.collect()
    assert runner() is None and not part.compiled and "forward" not in module.__dict__
    with torch.inference_mode():
        assert torch.equal(module(pixel_values=pixels), Head(seed=1)(pixel_values=pixels))
    assert packages.MADE == {"built": 1}  # eager: nothing loaded again
    part.compile(torch.device("cpu"))  # and compiled again on demand: the package is loaded from the store
    with torch.inference_mode():
        module(pixel_values=pixels)
    assert packages.MADE == {"built": 1, "loaded": 1}
