from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

# Before torch loads: spinning OpenMP threads make every model here several times slower when the two cores are
# shared with the servers the tests start (the servers set the same for themselves).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import pytest_asyncio

from captioner.app import CaptionerApp
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.support import serving


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``cuda`` where no CUDA device is present."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the module: the in-process server shares the cores with the test's own client."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_caption_model() -> str:
    from captioner import tiny

    return str(tiny.ensure_model("tiny"))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def caption_server(tiny_caption_model: str) -> AsyncIterator[GrpcServer]:
    """One captioner on the tiny random model, shared by the service tests (it is stateless between calls)."""
    settings = CaptionerSettings(
        server=ServerSettings(port=0, device="cpu", models=(tiny_caption_model,)),
        limits=EngineLimits(default_max_new_tokens=8),
    )
    metrics = Metrics()
    async with serving(CaptionerApp(settings, metrics), metrics, settings.server) as server:
        yield server
