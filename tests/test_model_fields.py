"""ListModels' per-field defaults and bounds are exactly what each server enforces (both services, real servers)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc

from animator import tiny
from animator.app import AnimatorApp
from animator.settings import AnimatorSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.families import CaptionFamily, family_params, family_server
from tests.support import serving, solid

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Fields whose bounds are not a simple range of the field's own value, or that are not numbers.
NOT_RANGED = {"image", "prompt", "negative_prompt", "format", "safety_check", "seed", "job_id"}
# The request fields only some video families take, by family; every family takes all the others.
FAMILY_FIELDS = {
    "svd": {"motion_bucket_id", "noise_aug_strength", "min_guidance_scale", "max_guidance_scale"},
    "ltx": {"prompt", "negative_prompt", "guidance_scale"},
    "wan": {"prompt", "negative_prompt", "guidance_scale"},
}
# A value of the right type for each field only some families take.
SOME_VALUE = {"motion_bucket_id": 100, "noise_aug_strength": 0.1, "min_guidance_scale": 1.0,
              "max_guidance_scale": 2.0, "prompt": "a cat", "negative_prompt": "blurry", "guidance_scale": 2.0}
# Each family's tiny model, as its preset is named.
PRESETS = {"svd": "tiny", "ltx": "ltx-tiny", "wan": "wan-tiny"}
# A valid value of each caption request field, to set one a model does not use.
SET_VALUES = {"prompt": "a picture of", "max_new_tokens": 4, "num_beams": 1}


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=sorted(PRESETS))
async def animator_server(request: pytest.FixtureRequest, one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    model = str(tiny.ensure_model(PRESETS[request.param]))
    settings = AnimatorSettings(server=ServerSettings(port=0, device="cpu", models=(model,)))
    metrics = Metrics()
    async with serving(AnimatorApp(settings, metrics), metrics, settings.server) as running:
        yield running


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def out_of_range(info: Any) -> list[int | float]:
    """Values just outside a field's reported bounds."""
    step = info.multiple_of or (1 if float(info.maximum if info.HasField("maximum") else 0).is_integer() else 0.01)
    values: list[int | float] = []
    if info.HasField("maximum"):
        values.append(info.maximum + step)
    if info.HasField("minimum") and info.minimum > 0:
        values.append(info.minimum - step)
    if info.multiple_of and info.HasField("default_value"):
        values.append(info.default_value.number_value + 1)
    return [int(v) if float(v).is_integer() else v for v in values]


async def rejected(call: Any, request: Any) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return violated_fields(caught.value)


@family_params
async def test_caption_fields_are_what_the_server_enforces(family: CaptionFamily) -> None:
    async with family_server(family) as server, grpc.aio.insecure_channel(server.address) as channel:
        stub = caption_pb2_grpc.CaptionServiceStub(channel)
        (model,) = (await stub.ListModels(caption_pb2.ListModelsRequest())).models
        fields = {info.name: info for info in model.fields}
        assert model.family == family.name and set(fields) == family.fields
        assert fields["max_new_tokens"].maximum == model.max_new_tokens_limit
        assert json_format.MessageToDict(fields["max_new_tokens"].default_value) == model.default_max_new_tokens
        assert fields["image"].maximum == model.max_image_bytes
        for name, info in fields.items():
            for value in [] if name in NOT_RANGED else out_of_range(info):
                request = caption_pb2.CaptionRequest(image=solid(), **{name: value})
                assert await rejected(stub.Caption, request) == [name], (name, value)
        if "prompt" in fields:
            too_long = caption_pb2.CaptionRequest(image=solid(), prompt="a" * (int(fields["prompt"].maximum) + 1))
            assert await rejected(stub.Caption, too_long) == ["prompt"]
        # A field the model does not use is refused naming it and the model, never silently ignored.
        unused = {f.name for f in caption_pb2.CaptionRequest.DESCRIPTOR.fields} - set(fields) - {"model_id"}
        for name in unused:
            request = caption_pb2.CaptionRequest(image=solid(), **{name: SET_VALUES[name]})
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Caption(request, timeout=30)
            assert violated_fields(caught.value) == [name] and model.model_id in (caught.value.details() or "")
        assert await stub.Caption(caption_pb2.CaptionRequest(image=solid()), timeout=30)


async def first(stub: animate_pb2_grpc.AnimateServiceStub, request: animate_pb2.AnimateRequest,
                timeout: float) -> None:
    async for _ in stub.Animate(request, timeout=timeout):
        return


async def test_animate_fields_are_what_the_server_enforces(animator_server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(animator_server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        (model,) = (await stub.ListModels(animate_pb2.ListModelsRequest())).models
        fields = {info.name: info for info in model.fields}
        every = {f.name for f in animate_pb2.AnimateRequest.DESCRIPTOR.fields} - {"model_id"}
        assert set(fields) == every - set().union(*FAMILY_FIELDS.values()) | FAMILY_FIELDS[model.family]
        defaults = {name: json_format.MessageToDict(info.default_value) for name, info in fields.items()
                    if info.HasField("default_value")}
        assert (defaults["width"], defaults["num_frames"]) == (model.default_width, model.default_num_frames)
        assert defaults["format"] == "VIDEO_FORMAT_MP4_H264" and "seed" not in defaults
        animate = functools.partial(first, stub)
        for name, info in fields.items():
            for value in [] if name in NOT_RANGED else out_of_range(info):
                request = animate_pb2.AnimateRequest(image=solid(), **{name: value})
                assert await rejected(animate, request) == [name], (name, value)
        too_long = animate_pb2.AnimateRequest(image=solid(), job_id="a" * (int(fields["job_id"].maximum) + 1))
        assert await rejected(animate, too_long) == ["job_id"]
        if "prompt" in fields:
            words = animate_pb2.AnimateRequest(image=solid(), prompt="a" * (int(fields["prompt"].maximum) + 1))
            assert await rejected(animate, words) == ["prompt"]


async def test_a_field_the_model_does_not_take_is_rejected_naming_it_and_the_model(
    animator_server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(animator_server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        (model,) = (await stub.ListModels(animate_pb2.ListModelsRequest())).models
        unused = set().union(*FAMILY_FIELDS.values()) - FAMILY_FIELDS[model.family]
        request = animate_pb2.AnimateRequest(image=solid(), **{name: SOME_VALUE[name] for name in unused})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await first(stub, request, 30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(violated_fields(caught.value)) == sorted(unused)
    for name in unused:
        assert f"{name} is not used by model {model.model_id!r} ({model.family})" in (caught.value.details() or "")


async def test_a_huge_unknown_model_id_is_not_found_with_a_short_message(
    caption_server: GrpcServer, animator_server: GrpcServer
) -> None:
    huge = "m" * 10_000  # echoed twice in full, it once overflowed the status trailers (RESOURCE_EXHAUSTED)
    async with grpc.aio.insecure_channel(caption_server.address) as channel:
        call = caption_pb2_grpc.CaptionServiceStub(channel).Caption(
            caption_pb2.CaptionRequest(image=solid(), model_id=huge), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND and len(caught.value.details() or "") < 300
    async with grpc.aio.insecure_channel(animator_server.address) as channel:
        stream = animate_pb2_grpc.AnimateServiceStub(channel).Animate(
            animate_pb2.AnimateRequest(image=solid(), model_id=huge), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.read()
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND and len(caught.value.details() or "") < 300
    # The length is the id's own (10,000), not its repr's with the quotes.
    assert "(10000 characters)" in (caught.value.details() or "")
