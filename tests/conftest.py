from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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
from tests.support import require, serving


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


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shapes_animator() -> AsyncIterator[GrpcServer]:
    """An animator on its embedded default, the trained shape model (animator/models/shapes-svd), in float32 as its
    card's figures were measured, whichever dtype this CPU would choose."""
    from animator.app import AnimatorApp
    from animator.settings import AnimatorSettings

    settings = AnimatorSettings(server=ServerSettings(port=0, device="cpu", dtype="float32"))
    metrics = Metrics()
    async with serving(AnimatorApp(settings, metrics), metrics, settings.server) as server:
        yield server


@pytest.fixture(scope="session")
def typescript_client() -> Path:
    """The TypeScript client package (client/ts), built from its current sources for the Node and browser tests."""
    package = Path(__file__).resolve().parent.parent / "client" / "ts"
    require(shutil.which("npm") is not None and (package / "node_modules" / ".bin" / "tsc").exists(),
            "needs npm and `npm ci` in client/ts (make setup does it where npm exists)")
    build = subprocess.run(["npm", "run", "--silent", "build"], cwd=package, capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    return package


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker (``make test``): its fuzz tallies go to the controller, which prints them."""
    from tests.fuzzing import TALLIES

    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["fuzz_tallies"] = {case: dict(statuses) for case, statuses in TALLIES.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: a finished worker's fuzz tallies, added to this process's."""
    from tests.fuzzing import TALLIES

    for case, statuses in getattr(node, "workeroutput", {}).get("fuzz_tallies", {}).items():
        TALLIES[case].update(statuses)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzz tests' case counts and status tallies (tests/test_fuzz.py), when any ran."""
    from tests.fuzzing import TALLIES

    for case, statuses in sorted(TALLIES.items()):
        counts = ", ".join(f"{name} {count}" for name, count in statuses.most_common())
        terminalreporter.write_line(f"fuzz {case}: {sum(statuses.values())} cases: {counts}")
