"""CaptionService through a real grpc.aio server on port 0, the generated stubs and the typed client."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from imagewire import cli
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc
from imagewire.client import AsyncCaptionClient, CaptionModelList, ImagewireError
from imagewire.limits import MAX_IMAGE_BYTES
from PIL import Image

from captioner.app import CaptionerApp
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.support import encode, png, solid
from tests.test_images import bomb_png

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_caption_success_reports_model_and_usage(caption_server: GrpcServer, tiny_caption_model: str) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        result = await client.caption(solid(size=(64, 48)))
    assert result.text.strip() and all(word.isalpha() for word in result.text.split())
    assert result.model_id == tiny_caption_model  # a --model is reported as given
    rate = EngineLimits().usd_per_input_pixel
    assert result.usage.input_pixels == 64 * 48
    assert result.usage.usd_per_input_pixel == pytest.approx(rate)
    assert result.usage.price_usd == pytest.approx(64 * 48 * rate)
    assert result.batch_size >= 1


async def test_prompt_prefixes_the_caption(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        result = await client.caption(solid(), prompt="a picture of")
    assert result.text.startswith("a picture of")


async def test_same_image_same_caption(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        first, second = [await client.caption(solid((10, 200, 10)), max_new_tokens=6) for _ in range(2)]
    assert first.text == second.text


def bad_inputs() -> list[tuple[str, bytes, str]]:
    image = Image.new("RGB", (32, 32), (1, 2, 3))
    return [
        ("empty", b"", "empty"),
        ("garbage", b"\x00\x01 definitely not an image", "not a decodable"),
        ("truncated", png(image)[:70], "truncated or corrupt"),
        ("unsupported format", encode(image, "PPM"), "not a decodable"),
        ("too many pixels", bomb_png(40_000, 40_000), "pixels"),
    ]


@pytest.mark.parametrize(("case", "data", "fragment"), bad_inputs(), ids=[c[0] for c in bad_inputs()])
async def test_bad_images_are_invalid_argument_and_server_stays_up(
    caption_server: GrpcServer, case: str, data: bytes, fragment: str
) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        with pytest.raises(ImagewireError) as caught:
            await client.caption(data)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT, case
        assert fragment in caught.value.message
        assert [v.field for v in caught.value.field_violations] == ["image"]
        assert (await client.caption(solid())).text


async def test_bad_options_name_every_field(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        with pytest.raises(ImagewireError) as caught:
            await client.caption(solid(), max_new_tokens=0, num_beams=1000)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in caught.value.field_violations} == {"max_new_tokens", "num_beams"}
        with pytest.raises(ImagewireError) as caught:
            await client.caption(solid(), prompt="x" * 600)
        assert [v.field for v in caught.value.field_violations] == ["prompt"]
        assert (await client.caption(solid())).text


async def test_unknown_model_is_not_found_and_names_the_loaded_ones(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        loaded = (await client.list_models()).default_model_id
        with pytest.raises(ImagewireError) as caught:
            await client.caption(solid(), model_id="Salesforce/not-loaded")
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert loaded in caught.value.message
        assert (await client.caption(solid(), model_id=loaded)).model_id == loaded


async def test_oversized_image_is_refused_by_the_client_naming_the_limit(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        with pytest.raises(ImagewireError) as caught:
            await client.caption(b"\x89PNG" + b"\0" * (51 * 1024 * 1024))
        # Before sending (not gRPC's "Sent message larger than max"), in the shape of the server's own answer.
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in caught.value.field_violations] == ["image"] and "limit" in caught.value.message
        assert (await client.caption(solid())).text


async def test_image_just_over_50_mib_inside_the_envelope_is_invalid_argument(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        with pytest.raises(ImagewireError) as caught:
            await client.caption(b"\0" * (MAX_IMAGE_BYTES + 1))
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "limit" in caught.value.message


async def test_concurrent_good_and_bad_requests_each_get_their_own_answer(caption_server: GrpcServer) -> None:
    colours = [(i * 20, 255 - i * 20, 100) for i in range(12)]
    async with AsyncCaptionClient(caption_server.address) as client:
        results = await asyncio.gather(*(client.caption(solid(c)) for c in colours))
        errors = await asyncio.gather(*(client.caption(b"bad") for _ in range(4)), return_exceptions=True)
    assert all(r.text for r in results)
    assert all(isinstance(e, ImagewireError) and e.code is grpc.StatusCode.INVALID_ARGUMENT for e in errors)


async def test_list_models_reports_limits(caption_server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(caption_server.address) as channel:
        response = await caption_pb2_grpc.CaptionServiceStub(channel).ListModels(caption_pb2.ListModelsRequest())
    (model,) = response.models
    assert model.model_id == response.default_model_id
    # --dtype auto: float32, or bfloat16 where this CPU times it faster (at start-up): what was decided.
    assert isinstance(caption_server.app, CaptionerApp)
    assert model.device == "cpu" and model.dtype == caption_server.app.decisions[model.model_id].dtype
    assert model.max_image_bytes == MAX_IMAGE_BYTES
    assert model.default_max_new_tokens == 8 and model.max_batch_size == 16


async def test_the_models_command_prints_the_typed_model_list_as_json(
    caption_server: GrpcServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        models = await client.list_models()
    assert isinstance(models, CaptionModelList) and models.models[0].max_image_bytes == 50 * 1024 * 1024
    assert await asyncio.to_thread(cli.main, ["models", "--target", caption_server.address]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(dataclasses.asdict(models)))  # tuples: lists


async def test_a_failed_call_carries_the_request_id_it_sent(caption_server: GrpcServer) -> None:
    async with AsyncCaptionClient(caption_server.address) as client:
        with pytest.raises(ImagewireError) as caught:
            await client.caption(b"not an image", request_id="req-77")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT and caught.value.request_id == "req-77"


async def test_health_serving_and_reflection_lists_services(caption_server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(caption_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "imagewire.caption.v1.CaptionService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = [r async for r in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            list_services="")]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"imagewire.caption.v1.CaptionService", "grpc.health.v1.Health"} <= names


async def test_request_id_is_echoed(caption_server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(caption_server.address) as channel:
        call = caption_pb2_grpc.CaptionServiceStub(channel).Caption(
            caption_pb2.CaptionRequest(image=solid()), metadata=(("x-request-id", "req-42"),)
        )
        await call
        # In the trailers: a unary answer's headers go out with it, so that a failure before it stays retryable.
        assert ("x-request-id", "req-42") in tuple(await call.trailing_metadata())


async def test_not_serving_and_unavailable_until_loaded(tiny_caption_model: str) -> None:
    settings = CaptionerSettings(server=ServerSettings(port=0, models=(tiny_caption_model,)))
    metrics = Metrics()
    server = GrpcServer(settings.server, CaptionerApp(settings, metrics), metrics=metrics)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await caption_pb2_grpc.CaptionServiceStub(channel).Caption(caption_pb2.CaptionRequest(image=solid()))
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            await server.load()
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


async def test_max_new_tokens_beyond_the_models_text_length_is_invalid_argument(caption_server: GrpcServer) -> None:
    # The tiny model has 64 text positions, below the server's limit of 128: a client mistake, not INTERNAL.
    async with AsyncCaptionClient(caption_server.address) as client:
        (model,) = (await client.list_models()).models
        assert model.max_new_tokens_limit == 63
        with pytest.raises(ImagewireError) as caught:
            await client.caption(solid(), max_new_tokens=100)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in caught.value.field_violations] == ["max_new_tokens"]
        with pytest.raises(ImagewireError) as caught:
            await client.caption(solid(), prompt="a picture of", max_new_tokens=63)
        assert [v.field for v in caught.value.field_violations] == ["max_new_tokens"]
        assert (await client.caption(solid(), prompt="a picture of", max_new_tokens=60)).text
        with pytest.raises(ImagewireError) as caught:
            await client.caption(solid(), prompt=" ".join(["red"] * 70))
        assert [v.field for v in caught.value.field_violations] == ["prompt"]
