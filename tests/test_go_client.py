"""The Go client (client/go) against real servers on loopback: `go vet`, then `go test` with the servers'
addresses in IMAGEWIRE_GO_* -- a captioner and an animator on the tiny models, a TCP proxy this test cuts when
the Go test says so, the Envoy front door to both -- and the videos the Go client wrote, decoded here."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, engine_of, noise_png
from tests.certs import make_certs
from tests.front_door import ANIMATE, CAPTION, grpc_web_front_door
from tests.gates import Gate, gate
from tests.go_tool import GO_EXAMPLE, GO_MODULE, go_env, go_ready
from tests.support import captioner_app, require, serving
from tests.tcp_proxy import TcpProxy, tcp_proxy
from tests.test_client_balancing import unavailable, unloaded_but_serving

# Every test in client/go/imagewire; each must pass here, none skip.
GO_TESTS = ["TestCaption", "TestAnimateToAFile", "TestWatchAndCancel", "TestADroppedStreamResumesToTheSameBytes",
            "TestABadFieldIsInvalidArgumentNamingIt", "TestAPassedDeadlineIsDeadlineExceeded",
            "TestACallRefusedBeforeItAnswersIsRetriedOnAnotherReplica", "TestThroughTheEnvoyFrontDoor",
            "TestMutualTLSAndABearerToken",
            "TestSinkWritesChunksInOrderAndChecksTheResult", "TestServiceConfigIsThePythonClients",
            "TestErrorsCarryTheStatusAndTheFieldViolations", "TestGrpcGoAppliesTheRetryPolicyFrom140OrWhenTurnedOn"]
# The first build compiles grpc-go from Debian's sources; later runs use go's build cache.
GO_TIMEOUT_S = 280


@pytest.fixture(scope="module")
def go() -> None:
    require(go_ready(), "needs go and golang-google-grpc-dev from Debian (.ci/run installs them)")


def run_go(*args: str, cwd: Path = GO_MODULE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["go", *args], cwd=cwd, env=go_env(), capture_output=True, text=True, timeout=GO_TIMEOUT_S)


def replaced(go_mod: Path) -> dict[str, str]:
    """A go.mod's replace directives, the paths made absolute."""
    pairs = re.findall(r"^\s*(\S+) => (\S+)$", go_mod.read_text(), re.MULTILINE)
    return {module: str((go_mod.parent / path).resolve()) for module, path in pairs}


def test_the_example_replaces_modules_as_the_client_does() -> None:
    client, example = replaced(GO_MODULE / "go.mod"), replaced(GO_EXAMPLE / "go.mod")
    assert example.pop("imagewire.dev/client") == str(GO_MODULE) and example == client and client


@pytest.mark.timeout(GO_TIMEOUT_S + 20)
def test_go_vet_and_format(go: None) -> None:
    vet = run_go("vet", "./...")
    assert vet.returncode == 0, vet.stdout + vet.stderr
    unformatted = subprocess.run(["gofmt", "-l", "."], cwd=GO_MODULE, capture_output=True, text=True, check=True)
    assert unformatted.stdout == "", f"not gofmt-formatted: {unformatted.stdout}"


class Cutter:
    """Answers the Go test's requests on a loopback port, a line each: "hold" holds the animator's decode after
    its next chunk, so the job cannot end before the cut; "cut" kills the proxy (every connection reset), lets the
    job decode one more chunk with no one watching, reopens the decode and restarts the proxy. Each is answered
    "ok" once done."""

    def __init__(self, proxy: TcpProxy, vae: object) -> None:
        self.proxy = proxy
        self.cuts = 0
        self._vae = vae
        self._held = contextlib.ExitStack()
        self._decode: Gate | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        if line == "hold":
            self._decode = self._held.enter_context(gate(self._vae, "decode"))
            self._decode.let_through(1)
        elif line == "cut" and self._decode is not None:
            self.proxy.kill()
            self.cuts += 1
            self._decode.let_through(1)
            await self._decode.wait_entered()
            self._held.close()
            await self.proxy.start()
        writer.write(b"ok\n" if line in ("hold", "cut") else b"unknown\n")
        await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        try:
            yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            self._held.close()
            server.close()


def resumes(server: GrpcServer) -> float:
    return server.metrics.registry.get_sample_value("imagewire_job_resumes_total", {"rpc": "watch"}) or 0.0


def run_example(tmp_path: Path, image: Path, captioner: str, animator: str) -> list[str]:
    """examples/go built, then its caption and animate commands run against the servers: their stdout."""
    command = tmp_path / "imagewire-go"
    built = run_go("build", "-o", str(command), ".", cwd=GO_EXAMPLE)
    assert built.returncode == 0, built.stderr
    outputs = []
    for args in (["caption", str(image), "--target", captioner, "--max-new-tokens", "4"],
                 ["animate", str(image), "-o", str(tmp_path / "example.webm"), "--target", animator, "--num-frames",
                  "3", "--width", "64", "--height", "64", "--num-inference-steps", "1", "--seed", "11"]):
        done = subprocess.run([str(command), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    return outputs


def frames(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as container:
        return [(frame.width, frame.height) for frame in container.decode(video=0)]


# A fresh machine compiles grpc-go from source first (the vet test warms go's build cache for this one).
@pytest.mark.timeout(GO_TIMEOUT_S + 120)
async def test_the_go_client_against_real_servers(go: None, caption_server: GrpcServer, tiny_caption_model: str,
                                                  one_torch_thread: None, tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(noise_png(7))
    async with contextlib.AsyncExitStack() as stack:
        animator = await stack.enter_async_context(animator_server(EngineLimits(max_num_inference_steps=60)))
        proxy = await stack.enter_async_context(tcp_proxy(animator.port))
        cutter = Cutter(proxy, engine_of(animator).model("").pipeline.vae)
        control = await stack.enter_async_context(cutter.serving())
        envoy = await stack.enter_async_context(grpc_web_front_door(
            {CAPTION: caption_server.address, ANIMATE: animator.address}, allow_origin="http://127.0.0.1"))
        refusing = await unloaded_but_serving(tiny_caption_model)
        stack.push_async_callback(refusing.stop, 0)
        certs = make_certs(tmp_path)
        secure_app = captioner_app(tiny_caption_model, tls_cert=certs.server_cert, tls_key=certs.server_key,
                                   tls_client_ca=certs.ca, auth_token="s3cret")
        secure = await stack.enter_async_context(serving(secure_app, secure_app.metrics, secure_app.settings.server))
        watched = resumes(animator)
        env = go_env(IMAGEWIRE_GO_CAPTIONER=caption_server.address, IMAGEWIRE_GO_REFUSING=refusing.address,
                     IMAGEWIRE_GO_SECURE=secure.address, IMAGEWIRE_GO_TOKEN="s3cret", IMAGEWIRE_GO_CA=str(certs.ca),
                     IMAGEWIRE_GO_CLIENT_CERT=str(certs.client_cert), IMAGEWIRE_GO_CLIENT_KEY=str(certs.client_key),
                     IMAGEWIRE_GO_ANIMATOR=animator.address,
                     IMAGEWIRE_GO_CUT_PROXY=proxy.address, IMAGEWIRE_GO_CONTROL=control,
                     IMAGEWIRE_GO_ENVOY=envoy.removeprefix("http://"), IMAGEWIRE_GO_IMAGE=str(image),
                     IMAGEWIRE_GO_OUT=str(tmp_path), CI="1")
        process = await asyncio.create_subprocess_exec(
            "go", "test", "-count=1", "-v", f"-timeout={GO_TIMEOUT_S - 20}s", "./...", cwd=GO_MODULE, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), GO_TIMEOUT_S)
        dropped_then_resumed = resumes(animator) - watched
        example = await asyncio.to_thread(run_example, tmp_path, image, caption_server.address, animator.address)

        refused = unavailable(refusing)

    text = output.decode()
    assert process.returncode == 0, text
    passed = set(re.findall(r"^\s*--- PASS: (\w+)", text, re.MULTILINE))
    assert set(GO_TESTS) <= passed, f"not passed: {sorted(set(GO_TESTS) - passed)}\n{text}"
    assert "--- SKIP" not in text and "--- FAIL" not in text, text
    # The video the Go client wrote decodes to the frames asked for (its SHA-256 was checked by the client).
    assert frames(tmp_path / "animate.mp4") == [(96, 64)] * 5
    assert len(frames(tmp_path / "envoy.mp4")) == 5
    # The replica refusing calls was called, with and without retries (as many refusals as calls without them).
    assert refused > 4
    # The cut stream: one real cut, resumed by WatchAnimation on the server, the same bytes as the direct run.
    assert cutter.cuts == 1 and proxy.connections >= 2 and dropped_then_resumed >= 1
    resumed = (tmp_path / "resumed.mp4").read_bytes()
    assert resumed == (tmp_path / "direct.mp4").read_bytes()
    assert hashlib.sha256(resumed).hexdigest() != hashlib.sha256(b"").hexdigest()
    # The example: a caption line per image; the animate command's progress, and a WebM (from -o's extension).
    caption, animate = example
    assert caption.startswith(f"{image}: ") and len(caption.strip()) > len(f"{image}: ")
    assert "DENOISE 1/1" in animate and "video video/webm 64x64, 3 frames" in animate
    assert f"sha256 {hashlib.sha256((tmp_path / 'example.webm').read_bytes()).hexdigest()}, seed 11" in animate
    assert frames(tmp_path / "example.webm") == [(64, 64)] * 3
