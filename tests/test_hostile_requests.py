"""Requests a hostile tester sent to the animator (issue 24, bug 8): every violation named at once (an unknown
format too), bounds ListModels can state truly, and a deadline's message that says what becomes of the job."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.client import ImagewireError

from animator.engine import AnimateEngine
from animator.limits import EngineLimits
from animator.params import AnimateInput
from imagewire_serving import errors
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, tiny_backend
from tests.support import solid

LONG = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 100, "decode_chunk_size": 4}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def animator() -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits(max_num_frames=16, max_num_inference_steps=100)) as running:
        yield running


async def test_an_unknown_format_is_named_with_the_other_violations(animator: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(animator.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        request = animate_pb2.AnimateRequest(image=solid(), format=99, num_frames=10**6, width=3)  # type: ignore[arg-type]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.Animate(request, timeout=30):
                pass
    error = ImagewireError.from_rpc_error(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in error.field_violations} == {"format", "num_frames", "width"}, error.message
    assert "unknown video format 99" in error.message


async def test_list_models_states_no_bound_a_double_cannot_hold(animator: GrpcServer) -> None:
    """The seed's maximum was 2^64 - 1 as a double: 1.8446744073709552e+19, above the largest uint64. A bound
    the field's type already sets is left out (absent: the type's range)."""
    async with grpc.aio.insecure_channel(animator.address) as channel:
        listed = await animate_pb2_grpc.AnimateServiceStub(channel).ListModels(animate_pb2.ListModelsRequest(),
                                                                              timeout=10)
    for model in listed.models:
        fields = {info.name: info for info in model.fields}
        assert not fields["seed"].HasField("maximum"), fields["seed"]
        assert fields["seed"].minimum == 0
        for info in model.fields:
            assert not info.HasField("maximum") or info.maximum < 2.0**64, info


@pytest.mark.parametrize(("grace", "said"), [(0.0, "with no detach grace, the job stops at its next step"),
                                             (3.0, "it goes on for 3 s (its detach grace)")])
async def test_a_passed_deadline_says_what_becomes_of_the_job(grace: float, said: str) -> None:
    """It said "it goes on without this call" though, with no detach grace, the job stops."""
    engine = AnimateEngine([tiny_backend()], EngineLimits(detach_grace=5, max_detach_grace=10), Metrics())
    engine.start()
    try:
        stream = engine.animate(AnimateInput(image=solid(), job_id=f"late-{grace:g}", detach_grace_seconds=grace,
                                             **LONG), deadline=time.monotonic() + 0.5)
        with pytest.raises(errors.DeadlineExceeded) as caught:
            async for _ in stream:
                pass
        assert said in caught.value.message and "without this call" not in caught.value.message
    finally:
        await engine.close()
