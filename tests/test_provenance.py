"""What a seed's output depends on, as the servers report it: ListModels' provenance, each video job's status (its
key, first in every stream) and result, each caption's key; and what changes the key (the threads, the model's
files) and what does not (another copy of the same files, another start)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import torch
from imagewire.client import AnimateResult, AsyncAnimateClient, AsyncCaptionClient, JobStatus

from animator import tiny
from animator.engine import AnimateEngine
from animator.families.svd import SvdBackend
from animator.limits import EngineLimits
from imagewire_serving.provenance import Provenance, model_files
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, noise_png, tiny_backend
from tests.support import solid

PARAMS = {"width": 64, "height": 64, "num_frames": 3, "num_inference_steps": 1, "seed": 4}
KEY = re.compile(r"^[0-9a-f]{16}$")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits()) as running:
        yield running


async def test_list_models_each_job_and_its_result_report_one_provenance(server: GrpcServer) -> None:
    async with AsyncAnimateClient(server.address) as client:
        (model,) = (await client.list_models()).models
        provenance = model.provenance
        assert provenance is not None and KEY.match(provenance.key)
        assert provenance.dtype == model.dtype and provenance.threads == torch.get_num_threads() == 1
        assert provenance.device_kind.startswith("cpu: ") and provenance.model_digest.startswith("sha256:")
        assert provenance.model_revision == "" and not provenance.compiled  # a local directory, eager
        names = [library.split()[0] for library in provenance.libraries]
        assert names == ["imagewire", "torch", "diffusers", "transformers", "pillow", "av"]
        assert f"torch {torch.__version__}" in provenance.libraries
        events = [event async for event in client.animate(noise_png(1), job_id="provenance-1", **PARAMS)]
        watched = [event async for event in client.watch("provenance-1", offset=3)]
    for stream in (events, watched):
        status, result = stream[0], stream[-1]
        assert isinstance(status, JobStatus) and status.provenance_key == provenance.key
        assert isinstance(result, AnimateResult) and result.provenance == provenance


async def test_each_caption_says_its_models_key(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        (model,) = (await client.list_models()).models
        response = await client.caption(solid())
    assert model.provenance is not None and KEY.match(model.provenance.key)
    assert response.provenance_key == model.provenance.key and model.provenance.dtype == model.dtype
    assert [library.split()[0] for library in model.provenance.libraries] == [
        "imagewire", "torch", "transformers", "tokenizers", "pillow"]


def test_the_key_changes_with_the_threads_and_the_files_not_with_another_copy_or_start(tmp_path: Path) -> None:
    libraries = AnimateEngine.libraries
    backend = tiny_backend()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = Provenance.of(backend, libraries)
        torch.set_num_threads(2)
        two = Provenance.of(backend, libraries)
    finally:
        torch.set_num_threads(previous)
    assert (one.threads, two.threads) == (1, 2) and one.key != two.key
    # The same files elsewhere (another replica's copy), loaded again: the same provenance.
    copy = tmp_path / "copy"
    shutil.copytree(tiny.ensure_model("tiny"), copy)
    torch.set_num_threads(1)
    try:
        again = SvdBackend.load(str(copy), torch.device("cpu"), torch.float32, model_id="tiny")
        assert Provenance.of(again, libraries) == one
    finally:
        torch.set_num_threads(previous)
    # One byte of one config changed: other files, another digest.
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text() + " ")
    model_files.cache_clear()
    assert model_files(str(copy)).digest != backend.files.digest


def test_files_in_a_hugging_face_cache_are_named_by_their_blobs(tmp_path: Path) -> None:
    """A snapshot's files link to blobs named by their content hash (the hub's): the revision is the snapshot's
    name, and which blob a file links to is its identity (two blobs of equal bytes are still told apart)."""
    blobs = tmp_path / "models--owner--name" / "blobs"
    snapshot = tmp_path / "models--owner--name" / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, blob in (("config.json", "aaaa"), ("model.safetensors", "bbbb")):
        (blobs / blob).write_bytes(b"content")
        os.symlink(blobs / blob, snapshot / name)
    found = model_files(str(snapshot))
    assert found.revision == "0123abcd" and found.digest.startswith("sha256:")
    (snapshot / "config.json").unlink()
    os.symlink(blobs / "bbbb", snapshot / "config.json")
    model_files.cache_clear()
    assert model_files(str(snapshot)).digest != found.digest
