"""The ``imagewire`` command as a user meets it, against real servers: the format from -o's extension, models found
by reflection, Ctrl-C, the progress display on and off a terminal, bad fields refused naming them, help for every
option; and the client refusing before sending what the descriptor or the contract rules out.

The command runs as a subprocess where the behaviour is the process's (exit status, stderr, SIGINT, a terminal);
it runs in a thread (``asyncio.to_thread``) so the in-process server on the test's event loop keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from imagewire import cli
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc
from imagewire.client import AnimateClient, AsyncCaptionClient, CaptionClient, ImagewireError
from imagewire.limits import MAX_IMAGE_BYTES

from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server, decoded
from tests.support import script, solid

IMAGEWIRE = script("imagewire")
# The test machine's two cores are shared with the in-process server: one OpenMP thread each.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
# The command with rich hidden, as where the client's `cli` extra is not installed.
WITHOUT_RICH = [sys.executable, "-c", "import sys; sys.modules['rich'] = None; from imagewire.cli import main; "
                "sys.exit(main())"]
SMALL = ["--width", "64", "--height", "64", "--num-frames", "8", "--num-inference-steps", "2", "--seed", "3",
         "--decode-chunk-size", "2"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def animator() -> AsyncIterator[GrpcServer]:
    async with animator_server(EngineLimits(max_num_frames=16, max_num_inference_steps=100)) as running:
        yield running


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(solid(size=(64, 64)))
    return path


async def run(*argv: str | Path, command: Sequence[str] = (IMAGEWIRE,)) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [*command, *map(str, argv)], capture_output=True, text=True,
                                   timeout=60, env=ENV)


async def test_the_format_follows_the_output_extension(animator: GrpcServer, image: Path, tmp_path: Path) -> None:
    webm = tmp_path / "out.webm"
    done = await run("animate", image, "-o", webm, "--target", animator.address, "--job-id", "fmt-webm", *SMALL)
    assert done.returncode == 0, done.stderr
    assert webm.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: WebM, not MP4 bytes under a .webm name
    # Off a terminal: one line as each stage first begins, though decoding and encoding alternate per chunk.
    stages = [line for line in done.stderr.splitlines() if line.endswith("...")]
    assert stages == [f"connecting to {animator.address}...", "queued...", "encode image...", "denoise...",
                      "decode...", "encode video..."], done.stderr
    # A watched job keeps its format: a file named for another container is refused before any byte is written.
    misnamed = await run("watch", "fmt-webm", "-o", tmp_path / "again.mp4", "--target", animator.address)
    assert misnamed.returncode == 2 and "the job writes WEBM" in misnamed.stderr, misnamed.stderr
    assert "name the file .webm" in misnamed.stderr and not (tmp_path / "again.mp4").exists()
    again = await run("watch", "fmt-webm", "-o", tmp_path / "again.webm", "--target", animator.address)
    assert again.returncode == 0 and (tmp_path / "again.webm").read_bytes() == webm.read_bytes(), again.stderr
    # The finished job's replayed last progress is no stage beginning: no stray "encode video..." line.
    assert "job fmt-webm (succeeded)" in again.stderr and "encode video..." not in again.stderr, again.stderr

    mismatch = await run("animate", image, "-o", tmp_path / "out.mp4", "--format", "webm", "--target",
                         animator.address)
    assert mismatch.returncode == 2 and "--format webm" in mismatch.stderr and ".mp4" in mismatch.stderr
    unknown = await run("animate", image, "-o", tmp_path / "out.avi", "--target", animator.address)
    assert unknown.returncode == 2 and ".mp4 or .webm" in unknown.stderr and "webm_vp9" in unknown.stderr
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.avi").exists()


async def test_segments_and_interpolation_from_the_command_line(animator: GrpcServer, image: Path,
                                                                 tmp_path: Path) -> None:
    out, previews = tmp_path / "long.mp4", tmp_path / "previews"
    done = await run("animate", image, "-o", out, "--target", animator.address, "--segments", "2", "--interpolate",
                     "2", "--preview-every", "1", "--preview-dir", previews, *SMALL)
    assert done.returncode == 0, done.stderr
    # 2 x (8 - 1) + 1 generated frames, 14 x 2 + 1 in the file.
    assert len(decoded(out.read_bytes()).frames) == 29
    # Off a terminal: each segment's stages begin once each, named with their segment.
    stages = [line for line in done.stderr.splitlines() if line.endswith("...")][2:]
    assert stages == ["1/2 encode image...", "1/2 denoise...", "1/2 decode...", "1/2 encode video...",
                      "2/2 encode image...", "2/2 denoise...", "2/2 decode...", "2/2 encode video..."], done.stderr
    # Each segment's previews are kept, the later segment's under names of their own.
    assert sorted(path.name for path in previews.iterdir()) == ["preview-0001.webp", "preview-0002.webp",
                                                                 "preview-2-0001.webp", "preview-2-0002.webp"]


async def test_models_finds_the_service_by_reflection_or_names_the_right_one(animator: GrpcServer,
                                                                            image: Path) -> None:
    found = await run("models", "--target", animator.address)
    assert found.returncode == 0, found.stderr
    assert '"motion_bucket_id"' in found.stdout and '"max_num_frames": 16' in found.stdout
    # A reader that goes before the output is written (as `| head` can) ends the command quietly, as SIGPIPE would.
    piped = await run("-o", "pipefail", "-c", f"{IMAGEWIRE} models --target {animator.address} | true",
                      command=("bash",))
    assert piped.returncode == 141 and piped.stderr == "", piped.stderr
    wrong = await run("models", "--service", "caption", "--target", animator.address)
    assert wrong.returncode == 1
    assert "hint:" in wrong.stderr and "use --service animate" in wrong.stderr, wrong.stderr
    caption = await run("caption", image, "--target", animator.address)
    assert caption.returncode == 1 and "imagewire.animate.v1.AnimateService" in caption.stderr, caption.stderr


async def test_ctrl_c_cancels_the_job_and_says_what_became_of_the_file(animator: GrpcServer, image: Path,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    argv = [IMAGEWIRE, "animate", str(image), "-o", str(out), "--target", animator.address, "--job-id", "ctrl-c",
            "--num-inference-steps", "100", "--num-frames", "16"]
    rc, stderr = await asyncio.to_thread(interrupt_at, argv, "denoise...")
    assert rc == 130, stderr
    assert f"interrupted: job ctrl-c cancelled; no video had arrived, so there is no {out}" in stderr
    assert not out.exists()
    with AnimateClient(animator.address) as client, pytest.raises(ImagewireError) as caught:
        await asyncio.to_thread(lambda: list(client.watch("ctrl-c")))
    assert caught.value.code is grpc.StatusCode.CANCELLED

    # watch: Ctrl-C only stops watching; the job goes on, and the message says how to pick it up again.
    job = subprocess.Popen([*argv[:4], str(tmp_path / "job.mp4"), *argv[5:8], "job-w", *argv[9:]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        await asyncio.to_thread(read_until, job, "denoise...")
        watched = tmp_path / "watched.mp4"
        rc, stderr = await asyncio.to_thread(interrupt_at, [IMAGEWIRE, "watch", "job-w", "-o", str(watched),
                                                            "--target", animator.address], "denoise...")
        assert rc == 130 and "stopped watching job job-w, which goes on" in stderr, stderr
        assert f"`imagewire watch job-w -o {watched} --target {animator.address}`" in stderr  # as printed, it works
        with AnimateClient(animator.address) as client:
            status = await asyncio.to_thread(client.cancel, "job-w")
        assert status.state.name == "CANCELLED"  # it was still running: the watch's Ctrl-C left it alone
    finally:
        await asyncio.to_thread(job.communicate, timeout=30)


def interrupt_at(argv: list[str], line: str) -> tuple[int, str]:
    """Run ``argv``, send it SIGINT once it has printed ``line`` on stderr; its exit status and stderr."""
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV)
    try:
        seen = read_until(process, line)
        process.send_signal(signal.SIGINT)
        return process.wait(timeout=30), seen + process.communicate(timeout=30)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def read_until(process: subprocess.Popen[str], wanted: str, timeout: float = 30.0) -> str:
    assert process.stderr is not None
    seen, deadline = "", time.monotonic() + timeout
    while wanted not in seen:
        assert time.monotonic() < deadline, f"no {wanted!r} within {timeout} s: {seen}"
        line = process.stderr.readline()
        assert line, f"exited with {process.wait()} before {wanted!r}: {seen}"
        seen += line
    return seen


@pytest.mark.parametrize("command", [[IMAGEWIRE], WITHOUT_RICH], ids=["rich", "plain"])
async def test_progress_on_a_terminal_says_bytes_received(animator: GrpcServer, image: Path, tmp_path: Path,
                                                          command: list[str]) -> None:
    out = tmp_path / "out.mp4"
    rc, shown = await asyncio.to_thread(on_terminal, [*command, "animate", str(image), "-o", str(out), "--target",
                                                      animator.address, *SMALL])
    assert rc == 0, shown
    assert "received" in shown and "sent" not in shown
    assert ("━" in shown) if command == [IMAGEWIRE] else ("KiB received" in shown and "[####" in shown)


def on_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` with stderr on a pseudo-terminal; its exit status and what the terminal showed."""
    main, child = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child, env=ENV)
    os.close(child)
    shown = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 1.0)[0]:
                try:
                    data = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                shown += data
        return process.wait(timeout=10), shown.decode(errors="replace")
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()


async def test_bad_fields_are_refused_before_sending_naming_each(animator: GrpcServer, image: Path,
                                                                tmp_path: Path) -> None:
    done = await run("animate", image, "-o", tmp_path / "out.mp4", "--target", animator.address,
                     "--num-frames", "-1", "--seed", "-2", "--noise-aug-strength", "1e39")
    assert done.returncode == 1
    assert "num_frames: must be 0..4294967295 (uint32), not -1" in done.stderr
    assert "seed: must be 0..18446744073709551615 (uint64), not -2" in done.stderr
    assert "noise_aug_strength: must be within the float range" in done.stderr
    assert "Value out of range" not in done.stderr and not (tmp_path / "out.mp4").exists()
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_IMAGE_BYTES + 1))
    done = await run("animate", big, "-o", tmp_path / "out.mp4", "--target", animator.address)
    assert done.returncode == 1 and f"the limit is {MAX_IMAGE_BYTES} (50 MiB)" in done.stderr, done.stderr
    assert "Sent message larger" not in done.stderr


async def test_the_client_checks_in_the_shape_of_the_servers_answer(caption_server: GrpcServer) -> None:
    too_big = b"\0" * (MAX_IMAGE_BYTES + 1)
    async with AsyncCaptionClient(caption_server.address) as client:
        with pytest.raises(ImagewireError) as local:
            await client.caption(too_big, max_new_tokens=-1)
        # Through the stub, past the client's check: the server's own answer names the same field the same way.
        stub = caption_pb2_grpc.CaptionServiceStub(client._channel)
        with pytest.raises(grpc.aio.AioRpcError) as remote:
            await stub.Caption(caption_pb2.CaptionRequest(image=too_big), timeout=30)
    assert local.value.code is grpc.StatusCode.INVALID_ARGUMENT
    violations = {v.field: v.description for v in local.value.field_violations}
    assert violations.keys() == {"image", "max_new_tokens"}
    assert remote.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    server = ImagewireError.from_rpc_error(remote.value)
    assert [v.field for v in server.field_violations] == ["image"]
    assert violations["image"].startswith(server.field_violations[0].description)
    with CaptionClient(caption_server.address) as blocking, pytest.raises(TypeError, match="num_beams"):
        blocking.caption(b"png", num_beams="3")


def test_every_option_says_what_it_does_and_its_default() -> None:
    commands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in commands.choices.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            assert action.help, f"{name} {action.option_strings}"
            flag_only = isinstance(action, argparse._StoreConstAction | argparse._StoreTrueAction)
            if not (flag_only or action.required):
                assert "default" in action.help.lower() or "absent" in action.help.lower(), \
                    f"{name} {action.option_strings}: {action.help}"
    # The optional request fields' flags speak the proto's comments.
    animate = commands.choices["animate"].format_help()
    assert "How much motion to generate, 0 to 1023" in " ".join(animate.split())


def test_servers_print_listening_and_ready_once(tmp_path: Path) -> None:
    # Both streams into one, as a terminal shows them.
    process = subprocess.Popen([script("imagewire-captioner"), "--port", "0", "--grace", "0", "--drain-window", "0"],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        shown = read_until_stdout(process, "ready in")
        process.send_signal(signal.SIGTERM)
        shown += process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert sum("listening on" in line for line in shown.splitlines()) == 1, shown
    assert "torchvision" not in shown, shown  # the PIL backend is the one served: no notice about it
    assert sum("ready in" in line for line in shown.splitlines()) == 1, shown


def read_until_stdout(process: subprocess.Popen[str], wanted: str, timeout: float = 60.0) -> str:
    assert process.stdout is not None
    seen, deadline = "", time.monotonic() + timeout
    while wanted not in seen:
        assert time.monotonic() < deadline and process.poll() is None, seen
        seen += process.stdout.readline()
    return seen
