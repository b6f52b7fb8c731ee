"""The video families beyond SVD (LTX-Video, Wan): tiny random models built from configs and loaded through
from_pretrained, their streamed frames against a plain pipeline call with the same seed, each served end to end
over gRPC (real frames, the prompt used, cancellation at the next step, bytes before the last frame is decoded),
and checkpoints that do not fit their class refused at start-up."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import grpc
import grpc.aio
import numpy as np
import pytest
import pytest_asyncio
import torch
from imagewire.animate.v1 import animate_pb2, animate_pb2_grpc
from PIL import Image
from safetensors.torch import load_file, save_file

from animator import families, tiny
from animator.app import AnimatorApp
from animator.families.base import PipelineBackend
from animator.limits import EngineLimits
from animator.params import AnimateInput, resolve
from animator.settings import AnimatorSettings
from imagewire_serving.metrics import Metrics
from imagewire_serving.server import GrpcServer
from imagewire_serving.settings import ServerSettings
from tests.animator_support import decoded, engine_of, noise_png
from tests.gates import gate
from tests.support import serving
from tests.test_startup import failed_start

PRESETS = {"ltx": "ltx-tiny", "wan": "wan-tiny"}
LIMITS = EngineLimits(max_num_frames=33, max_num_inference_steps=60)
# Frame counts off each model's default, on its grid (8k + 1, 4k + 1).
FRAMES = {"ltx": 25, "wan": 13}


def picture(size: tuple[int, int] = (96, 64)) -> Image.Image:
    return Image.open(io.BytesIO(noise_png(3, size))).convert("RGB")


@pytest.fixture(scope="module", params=sorted(PRESETS))
def backend(request: pytest.FixtureRequest, one_torch_thread: None) -> PipelineBackend:
    loaded = families.load(request.param, str(tiny.ensure_model(PRESETS[request.param])), torch.device("cpu"),
                           torch.float32)
    assert isinstance(loaded, PipelineBackend) and loaded.family == request.param
    return loaded


def plain_call(backend: PipelineBackend, image: Image.Image, params: Any) -> np.ndarray:
    """The pipeline called as its documentation shows, decoding itself, with the same seed."""
    frames = backend.pipeline(image, **backend.pipeline_arguments(params), output_type="np",
                              generator=torch.Generator().manual_seed(params.seed)).frames[0]
    return (frames * 255).round().astype(np.uint8)


def test_streamed_frames_equal_the_plain_pipeline_call(backend: PipelineBackend) -> None:
    image = picture()
    frames = FRAMES[backend.family]
    time = backend.accepts.chunk_multiple
    # The smallest chunks, and (for LTX, whose decoder is not causal) one chunk of every frame.
    for chunk in (time, frames - 1) if backend.family == "ltx" else (time,):
        request = AnimateInput(image=b"-", prompt="a red bird flies over the sea", seed=11, num_frames=frames,
                               num_inference_steps=2, decode_chunk_size=chunk)
        params = resolve(request, "m", backend.accepts, LIMITS).params
        steps: list[Any] = []
        chunks = list(backend.decode(backend.denoise(image, params, steps.append), params))
        streamed = np.concatenate(chunks)
        assert streamed.shape == (frames, 64, 96, 3) and streamed.std() > 0
        assert [step.done for step in steps] == [1, 2] and steps[-1].denoised.ndim == 4
        vae = backend.pipeline.vae
        # LTX's chunks are diffusers' framewise (temporal tiled) decoding with tiles of the chunk plus 8 frames.
        tiled = backend.family == "ltx" and chunk < frames - 1
        vae.use_framewise_decoding = tiled
        vae.tile_sample_min_num_frames, vae.tile_sample_stride_num_frames = chunk + time, chunk
        try:
            expected = plain_call(backend, image, params)
        finally:
            vae.use_framewise_decoding = False
        np.testing.assert_array_equal(streamed, expected)
        assert (len(chunks) == 1) == (chunk >= frames - 1)  # streamed in pieces unless asked for one


def test_prompts_beyond_the_token_limit_and_unused_negative_prompts_are_named(backend: PipelineBackend) -> None:
    long = " ".join(["cat"] * 40)  # the tiny tokenizers read 32 tokens
    params = resolve(AnimateInput(image=b"-", prompt=long, negative_prompt="dark", guidance_scale=1.0), "m",
                     backend.accepts, LIMITS).params
    found = {violation.field: violation.description for violation in backend.violations(params)}
    assert found["prompt"] == "prompt is 41 tokens; model 'ltx' reads at most 32".replace("'ltx'", repr(backend.family))
    assert "negative_prompt is used only with guidance_scale above 1" in found["negative_prompt"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(one_torch_thread: None) -> AsyncIterator[GrpcServer]:
    """One animator serving both families: each request names its model."""
    models = tuple(str(tiny.ensure_model(preset)) for preset in PRESETS.values())
    settings = AnimatorSettings(server=ServerSettings(port=0, device="cpu", models=models), limits=LIMITS)
    metrics = Metrics()
    async with serving(AnimatorApp(settings, metrics), metrics, settings.server) as running:
        yield running


async def model_ids(stub: animate_pb2_grpc.AnimateServiceStub) -> dict[str, str]:
    reply = await stub.ListModels(animate_pb2.ListModelsRequest())
    return {model.family: model.model_id for model in reply.models}


async def stream(stub: animate_pb2_grpc.AnimateServiceStub, **fields: Any) -> list[Any]:
    request = animate_pb2.AnimateRequest(image=noise_png(5), **fields)
    return [response async for response in stub.Animate(request, timeout=120)]


@pytest.mark.parametrize("family", sorted(PRESETS))
async def test_a_prompted_video_streams_while_it_decodes(server: GrpcServer, family: str) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        model_id = (await model_ids(stub))[family]
        fields = {"model_id": model_id, "seed": 9, "num_frames": FRAMES[family], "num_inference_steps": 2,
                  "decode_chunk_size": 8 if family == "ltx" else 4}
        events = await stream(stub, prompt="a small dog runs across the field", **fields)
        other = await stream(stub, prompt="the moon rises over a dark forest", **fields)
    kinds = [event.WhichOneof("event") for event in events]
    first_chunk = kinds.index("chunk")
    decoded = [event.progress.step for event in events[first_chunk:]
               if event.HasField("progress") and event.progress.stage == animate_pb2.STAGE_DECODE]
    assert decoded and decoded[-1] == FRAMES[family] and decoded[0] < FRAMES[family]  # bytes before the last frame
    data = b"".join(event.chunk.data for event in events if event.HasField("chunk"))
    frames = list(av.open(io.BytesIO(data)).decode(video=0))
    assert len(frames) == FRAMES[family] and (frames[0].width, frames[0].height) == (96, 64)
    header = next(event.header for event in events if event.HasField("header"))
    assert (header.num_frames, header.model_id) == (FRAMES[family], model_id)
    assert events[-1].result.sha256 != other[-1].result.sha256  # the prompt reaches the model


@pytest.mark.parametrize("family", sorted(PRESETS))
async def test_prompted_segments_chain_into_one_video_from_each_last_frame(server: GrpcServer, family: str) -> None:
    """Each later segment is conditioned on the previous one's last frame, with the same prompt; the file holds
    segments x (num_frames - 1) + 1 frames, interpolated to (n - 1) x 2 + 1."""
    engine = engine_of(server)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        model_id = (await model_ids(stub))[family]
        backend = engine.model(model_id)
        with gate(backend, "denoise", closed=False) as denoised:
            events = await stream(stub, model_id=model_id, seed=4, num_frames=FRAMES[family], num_inference_steps=2,
                                  prompt="a kite climbs", segments=2, interpolate=2, fps=8)
    generated = 2 * (FRAMES[family] - 1) + 1
    header = next(event.header for event in events if event.HasField("header"))
    frames = decoded(b"".join(event.chunk.data for event in events if event.HasField("chunk"))).frames
    assert header.num_frames == len(frames) == 2 * (generated - 1) + 1 and header.fps == 16
    (_, first_params, *_), (second, second_params, *_) = denoised.calls
    assert first_params.prompt == second_params.prompt == "a kite climbs"
    # The second segment's picture is the first segment's last frame: of the file's generated frames (lossy after
    # H.264 on a random model's noisy pictures), the nearest to it.
    conditioning = np.asarray(second, np.float32)
    error = {index: np.abs(conditioning - frames[index]).mean() for index in range(0, len(frames), 2)}
    assert min(error, key=error.__getitem__) == 2 * (FRAMES[family] - 1), error


@pytest.mark.parametrize("family", sorted(PRESETS))
async def test_cancel_stops_the_denoising_at_the_next_step(server: GrpcServer, family: str) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = animate_pb2_grpc.AnimateServiceStub(channel)
        model_id = (await model_ids(stub))[family]
        job_id = f"cancel-{family}"
        call = stub.Animate(animate_pb2.AnimateRequest(
            image=noise_png(6), model_id=model_id, prompt="a fish swims", num_inference_steps=60, job_id=job_id),
            timeout=120)
        steps: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in call:
                if event.HasField("progress") and event.progress.stage == animate_pb2.STAGE_DENOISE:
                    steps.append(event.progress.step)
                    if len(steps) == 1:
                        cancelled = asyncio.ensure_future(stub.CancelAnimation(
                            animate_pb2.CancelAnimationRequest(job_id=job_id), timeout=60))
        reply = await cancelled
    assert caught.value.code() is grpc.StatusCode.CANCELLED
    assert reply.job.state == animate_pb2.JOB_STATE_CANCELLED
    assert steps[-1] <= steps[0] + 2  # of 60: the step under way when the cancel came, and at most one more


def with_weights(source: Path, out: Path, component: str, change: Any) -> Path:
    """A copy of a model directory whose ``component`` weights are ``change(weights)``."""
    shutil.copytree(source, out)
    (weights_file,) = (out / component).glob("*.safetensors")
    save_file(change(load_file(weights_file)), weights_file)
    return out


def test_weights_that_do_not_fit_refuse_to_load_naming_the_model_and_the_keys(tmp_path: Path) -> None:
    ltx = tiny.ensure_model("ltx-tiny")

    def drop_and_add(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dropped = sorted(weights)[0]
        return {**{key: value for key, value in weights.items() if key != dropped}, "stray.weight": torch.zeros(2)}

    cases = {
        "transformer": with_weights(ltx, tmp_path / "a", "transformer", drop_and_add),  # a diffusers model
        "text_encoder": with_weights(ltx, tmp_path / "b", "text_encoder", drop_and_add),  # a transformers model
        # Another family's VAE under LTX-Video's component name.
        "vae": with_weights(ltx, tmp_path / "c", "vae", lambda _: load_file(
            next((tiny.ensure_model("wan-tiny") / "vae").glob("*.safetensors")))),
    }
    for component, directory in cases.items():
        with pytest.raises(ValueError) as caught:
            families.load("m", str(directory), torch.device("cpu"), torch.float32)
        assert f"its {component} (" in str(caught.value) and "the weights do not fit the class" in str(caught.value)
        assert "missing" in str(caught.value) and "unexpected" in str(caught.value)
    (line,) = failed_start("--model", str(cases["transformer"]), command="imagewire-animator")
    assert line.startswith(f"imagewire-animator: error: --model {cases['transformer']}: cannot load it: its "
                           "transformer (LTXVideoTransformer3DModel): the weights do not fit the class: "
                           "1 missing"), line
    assert "stray.weight" in line


def test_a_pipeline_no_family_serves_is_named(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError) as caught:
        families.family_for(str(tmp_path))
    message = str(caught.value)
    assert "'StableDiffusionPipeline'" in message
    assert all(name in message for name in ("LTXImageToVideoPipeline (ltx)", "StableVideoDiffusionPipeline (svd)",
                                            "WanImageToVideoPipeline (wan)"))
