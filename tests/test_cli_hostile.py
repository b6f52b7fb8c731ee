"""The ``imagewire`` command used as a hostile tester would (issue 24): every path ends clearly and on time, with
the right exit status (0 done, 1 a call failed, 2 a bad command line, 130 interrupted), and no client argument
turns into INTERNAL, UNKNOWN or a traceback. Real processes against real servers, as tests/test_cli.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from imagewire.client import AnimateClient, ImagewireError

from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server
from tests.support import solid
from tests.test_cli import run


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def animator() -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits(max_num_frames=16, max_num_inference_steps=100)) as running:
        yield running


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(solid(size=(64, 64)))
    return path


def clean(stderr: str) -> None:
    """No sign of an error the client made itself, of gRPC's C core, or of Python."""
    for sign in ("INTERNAL", "UNKNOWN", "Traceback", "Illegal header", "filter_stack_call"):
        assert sign not in stderr, stderr


@pytest.mark.parametrize("job_id", ["ünï", "new\nline", "a\x01b", "sp ace", "x" * 129])
async def test_a_job_id_outside_the_rule_is_refused_naming_it_before_sending(animator: GrpcServer, image: Path,
                                                                             tmp_path: Path, job_id: str) -> None:
    out = tmp_path / "o.mp4"
    for argv in (("animate", image, "-o", out, "--job-id", job_id), ("watch", job_id, "-o", out),
                 ("cancel", job_id)):
        done = await run(*argv, "--target", animator.address)
        assert done.returncode == 1, (argv, done.stderr)
        assert "INVALID_ARGUMENT: job_id must be 1 to 128 characters from A-Z" in done.stderr, done.stderr
        clean(done.stderr)
        assert not out.exists()
    if len(job_id) > 128:  # the length shown is the id's own, not its repr's with the quotes
        assert "(129 characters)" in done.stderr, done.stderr
    with AnimateClient(animator.address) as client, pytest.raises(ImagewireError) as caught:
        await asyncio.to_thread(client.animate_to_file, solid(), out, job_id=job_id)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.field_violations] == ["job_id"] and not out.exists()


async def test_metadata_the_channel_cannot_carry_is_refused_naming_it(animator: GrpcServer) -> None:
    with AnimateClient(animator.address, metadata=[("x-tenant", "Zürich")]) as client, \
            pytest.raises(ImagewireError) as caught:
        await asyncio.to_thread(client.list_models)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.field_violations] == ["x-tenant"]
    with AnimateClient(animator.address) as client, pytest.raises(ImagewireError) as caught:
        await asyncio.to_thread(client.cancel, "fine", request_id="é")
    assert [v.field for v in caught.value.field_violations] == ["x-request-id"]


@pytest.mark.parametrize(("argv", "flag"), [
    (("watch", "j", "-o", "w.mp4", "--offset", "-5"), "--offset"),
    (("cancel", "j", "--timeout", "0"), "--timeout"),
    (("cancel", "j", "--timeout", "-1"), "--timeout"),
    (("cancel", "j", "--timeout", "nan"), "--timeout"),
    (("models", "--timeout", "inf"), "--timeout"),
    (("cancel", "j", "--max-attempts", "0"), "--max-attempts"),
    (("cancel", "j", "--max-attempts", "6"), "--max-attempts"),
])
async def test_flag_values_out_of_range_are_usage_errors_naming_the_flag(argv: tuple[str, ...], flag: str,
                                                                        tmp_path: Path) -> None:
    done = await run(*argv, "--target", "127.0.0.1:1")
    assert done.returncode == 2, done.stderr
    assert f"argument {flag}: must be" in done.stderr, done.stderr
    clean(done.stderr)
