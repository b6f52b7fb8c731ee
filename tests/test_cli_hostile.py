"""The ``imagewire`` command used as a hostile tester would (issue 24): every path ends clearly and on time, with
the right exit status (0 done, 1 a call failed, 2 a bad command line, 130 interrupted), and no client argument
turns into INTERNAL, UNKNOWN or a traceback. Real processes against real servers, as tests/test_cli.py."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from imagewire.client import AnimateClient, ImagewireError

from animator.limits import EngineLimits
from imagewire_serving.server import GrpcServer
from tests.animator_support import animator_server
from tests.support import free_port, solid
from tests.test_cli import ENV, IMAGEWIRE, interrupt_at, read_until, run

# Slack for a loaded test machine: a process's start (imports) and a machine whose cores are shared.
STARTUP_S = 4.0
LOADED_S = 3.0


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


@pytest.mark.parametrize("command", ["animate", "watch"])
async def test_an_unreachable_target_fails_within_the_timeout_saying_connecting_at_once(
        command: str, image: Path, tmp_path: Path) -> None:
    """Bug 1: nothing listens at the target. The command says "connecting..." at once and fails within --timeout
    plus 2 s (it took 168 s, or 32 s with --timeout 20: a refused first call was resumed five times, each waiting
    30 s for the channel)."""
    out, target = tmp_path / "t.mp4", f"127.0.0.1:{free_port()}"
    argv = ["animate", str(image)] if command == "animate" else ["watch", "some-job"]
    started = time.monotonic()
    process = subprocess.Popen([IMAGEWIRE, *argv, "-o", str(out), "--target", target, "--timeout", "6"],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV)
    try:
        seen = await asyncio.to_thread(read_until, process, "connecting to")
        said = time.monotonic() - started  # 0.1-0.2 s here; slack for the process's start on a loaded machine
        assert f"connecting to {target}..." in seen and said < 1.0 + STARTUP_S, (said, seen)
        rc, stderr = await asyncio.to_thread(process.wait, 30), await asyncio.to_thread(process.stderr.read)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert rc == 1 and f"UNAVAILABLE: could not connect to {target}" in stderr, stderr
    assert elapsed < 6 + 2 + STARTUP_S, elapsed
    clean(stderr)
    assert not out.exists()


def test_the_default_deadline_gives_up_on_an_unreachable_target_after_one_reconnection_wait(tmp_path: Path) -> None:
    """Without --timeout (900 s for a video), a target that never connects ends the download after one wait for
    the channel (30 s): the waits are bounded by the time left, and a failed one is not retried."""
    import imagewire.client.animate_clients as clients

    with AnimateClient(f"127.0.0.1:{free_port()}") as client, pytest.raises(ImagewireError) as caught:
        started = time.monotonic()
        client.animate_to_file(solid(), tmp_path / "v.mp4", resume=clients.Resume(reconnect_timeout_s=2.0))
    elapsed = time.monotonic() - started
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE and "could not connect" in caught.value.message
    assert elapsed < 2.0 + 0.5 + 3.0 + LOADED_S, elapsed  # the wait, the first pause, the first call's own retries


async def test_ctrl_c_on_an_animate_that_attached_only_detaches(animator: GrpcServer, image: Path,
                                                                tmp_path: Path) -> None:
    """Bug 4: B runs the same command as A and attaches to A's job ("job dup-2 (running)"); Ctrl-C on B stops B
    alone: A's job goes on, and B says so."""
    argv = [IMAGEWIRE, "animate", str(image), "--target", animator.address, "--job-id", "dup-2", "--seed", "5",
            "--num-inference-steps", "100", "--num-frames", "16", "-o"]
    first = subprocess.Popen([*argv, str(tmp_path / "a.mp4")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=ENV)
    try:
        await asyncio.to_thread(read_until, first, "denoise...")
        rc, stderr = await asyncio.to_thread(interrupt_at, [*argv, str(tmp_path / "b.mp4")], "job dup-2 (running)")
        assert rc == 130, stderr
        assert "job dup-2 goes on: another call started it" in stderr and "cancelled" not in stderr, stderr
        clean(stderr)
        assert first.poll() is None  # A still streams its video
        with AnimateClient(animator.address) as client:
            status = await asyncio.to_thread(client.cancel, "dup-2")
        assert status.state.name == "CANCELLED"  # it was running until this cancel: B's Ctrl-C left it alone
    finally:
        await asyncio.to_thread(first.communicate, timeout=60)


async def test_ctrl_c_against_an_unreachable_target_says_no_job_started_and_no_file(image: Path,
                                                                                   tmp_path: Path) -> None:
    """Bug 8: it said "job unr-1 cancelled; the partial unr.mp4 was removed" when neither happened."""
    out, target = tmp_path / "unr.mp4", f"127.0.0.1:{free_port()}"
    rc, stderr = await asyncio.to_thread(interrupt_at, [IMAGEWIRE, "animate", str(image), "-o", str(out), "--target",
                                                        target, "--job-id", "unr-1"], "connecting to")
    assert rc == 130, stderr
    assert "job unr-1 never started" in stderr and f"no video had arrived, so there is no {out}" in stderr, stderr
    assert "cancelled" not in stderr and "removed" not in stderr
    clean(stderr)
    assert not out.exists()


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4, 0.8, 1.5])
async def test_ctrl_c_at_any_moment_of_a_stream_ends_130_without_a_traceback(animator: GrpcServer, image: Path,
                                                                             tmp_path: Path, delay: float) -> None:
    """Issue 19: a KeyboardInterrupt raised inside gRPC's channel lock ended in "RuntimeError: cannot release
    un-acquired lock". Ctrl-C is now taken by a signal handler that stops the calls from another thread."""
    out = tmp_path / "o.mp4"
    argv = [IMAGEWIRE, "animate", str(image), "-o", str(out), "--target", animator.address, "--job-id",
            f"any-{int(delay * 100)}", "--num-inference-steps", "30", "--num-frames", "16"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV)
    try:
        seen = await asyncio.to_thread(read_until, process, "connecting to")
        await asyncio.sleep(delay)
        process.send_signal(signal.SIGINT)
        rc = await asyncio.to_thread(process.wait, 30)
        stderr = seen + await asyncio.to_thread(process.stderr.read)
    finally:
        if process.poll() is None:
            process.kill()
    assert rc == 130 and "interrupted: job any-" in stderr, stderr
    clean(stderr)
    assert not out.exists()


async def test_an_endless_image_file_is_refused_at_the_limit_without_reading_it_whole(tmp_path: Path) -> None:
    """Bug 6: `imagewire caption /dev/zero` under `ulimit -v` ended in a MemoryError traceback (the file was read
    whole before the 50 MiB check); it reads the limit and one byte more and refuses with the usual message."""
    command = f"ulimit -v 1200000; exec {IMAGEWIRE} caption /dev/zero --target 127.0.0.1:{free_port()}"
    done = await asyncio.to_thread(subprocess.run, ["bash", "-c", command], capture_output=True, text=True,
                                   timeout=60, env=ENV)
    assert done.returncode == 1, done.stderr
    assert "image /dev/zero is over 52428800 bytes; the limit is 52428800 (50 MiB)" in done.stderr, done.stderr
    assert "MemoryError" not in done.stderr
    clean(done.stderr)


async def test_caption_dash_reads_the_image_from_standard_input(caption_server: GrpcServer) -> None:
    """Rough edge: `caption -` reads standard input, as command-line users expect."""
    done = await asyncio.to_thread(subprocess.run, [IMAGEWIRE, "caption", "-", "--json", "--target",
                                                    caption_server.address],
                                   input=solid(), capture_output=True, timeout=60, env=ENV)
    assert done.returncode == 0, done.stderr
    assert b'"image": "-"' in done.stdout and b'"text": ' in done.stdout


SMALL = ["--width", "64", "--height", "64", "--num-frames", "8", "--num-inference-steps", "2", "--seed", "3",
         "--decode-chunk-size", "2"]


async def test_dash_o_writes_the_video_to_standard_output(animator: GrpcServer, image: Path, tmp_path: Path) -> None:
    """Rough edge: `--format mp4 -o -` wrote a file named "-"; it is standard output, the summary on stderr."""
    done = await asyncio.to_thread(subprocess.run, [IMAGEWIRE, "animate", str(image), "-o", "-", "--format", "mp4",
                                                    "--target", animator.address, *SMALL],
                                   capture_output=True, timeout=120, env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout[4:8] == b"ftyp" and len(done.stdout) > 1000  # an MP4, whole, on standard output
    assert b"wrote standard output (" + str(len(done.stdout)).encode() + b" bytes" in done.stderr, done.stderr
    assert not (tmp_path / "-").exists()
    watch = await run("watch", "some-job", "-o", "-", "--target", animator.address)
    assert watch.returncode == 2 and "-o - (standard output) cannot be" in watch.stderr, watch.stderr


async def test_output_paths_are_created_or_refused_as_a_bad_command_line(animator: GrpcServer, image: Path,
                                                                         tmp_path: Path) -> None:
    """Rough edge: -o in a missing directory, or a --preview-dir that is a file, ended in raw errno text and exit
    1. Missing directories are created (for -o as for --preview-dir); what cannot be written is exit 2, saying
    why."""
    nested = tmp_path / "new" / "dir" / "out.mp4"
    done = await run("animate", image, "-o", nested, "--preview-dir", tmp_path / "p" / "q", "--target",
                     animator.address, *SMALL)
    assert done.returncode == 0 and nested.stat().st_size > 0, done.stderr
    a_file = tmp_path / "file"
    a_file.write_text("x")
    under_a_file = await run("animate", image, "-o", a_file / "out.mp4", "--target", animator.address)
    assert under_a_file.returncode == 2, under_a_file.stderr
    assert f"-o {a_file / 'out.mp4'}: cannot create the directory {a_file}" in under_a_file.stderr
    previews = await run("animate", image, "-o", tmp_path / "o.mp4", "--preview-dir", a_file, "--target",
                         animator.address)
    assert previews.returncode == 2 and f"--preview-dir {a_file} is a file, not a directory" in previews.stderr
    directory = await run("animate", image, "-o", tmp_path, "--format", "mp4", "--target", animator.address)
    assert directory.returncode == 2 and "is a directory: name a file in it" in directory.stderr
    for done in (under_a_file, previews, directory):
        clean(done.stderr)


async def test_wait_sends_an_animate_again_while_the_queue_is_full(image: Path, tmp_path: Path) -> None:
    """Rough edge: a full queue (RESOURCE_EXHAUSTED, safe to retry) failed the command; --wait tries again with
    growing pauses within --timeout."""
    long = ["--num-inference-steps", "100", "--num-frames", "16"]
    async with animator_server(EngineLimits(max_num_frames=16, max_num_inference_steps=100, max_queue=1)) as server:
        busy: list[subprocess.Popen[str]] = []
        try:
            for n, line in enumerate(("denoise...", "queue position 1")):  # one running, then one waiting
                busy.append(subprocess.Popen([IMAGEWIRE, "animate", str(image), "-o", str(tmp_path / f"{n}.mp4"),
                                              "--target", server.address, "--job-id", f"busy-{n}", *long],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV))
                await asyncio.to_thread(read_until, busy[n], line)
            refused = await run("animate", image, "-o", tmp_path / "r.mp4", "--target", server.address, *SMALL)
            assert refused.returncode == 1 and "RESOURCE_EXHAUSTED" in refused.stderr, refused.stderr
            waiting = subprocess.Popen([IMAGEWIRE, "animate", str(image), "-o", str(tmp_path / "w.mp4"), "--wait",
                                        "--timeout", "120", "--target", server.address, *SMALL],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
            await asyncio.to_thread(read_until, waiting, "the server's queue is full; trying again in")
            with AnimateClient(server.address) as client:
                for n in range(2):
                    await asyncio.to_thread(client.cancel, f"busy-{n}")
            stdout, stderr = await asyncio.to_thread(waiting.communicate, timeout=120)
            assert waiting.returncode == 0 and "wrote" in stdout, stderr
        finally:
            for process in busy:
                await asyncio.to_thread(process.communicate, timeout=60)


@pytest.mark.parametrize("delay", [0.1, 0.25, 0.4, 0.6, 0.9])
async def test_ctrl_c_while_the_command_starts_ends_130_without_a_traceback(image: Path, tmp_path: Path,
                                                                           delay: float) -> None:
    """Issue 19: Ctrl-C anywhere in the CLI, also while its modules (gRPC, protobuf) import."""
    process = subprocess.Popen([IMAGEWIRE, "animate", str(image), "-o", str(tmp_path / "o.mp4"), "--target",
                                f"127.0.0.1:{free_port()}"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=ENV)
    await asyncio.sleep(delay)
    process.send_signal(signal.SIGINT)
    stderr = (await asyncio.to_thread(process.communicate, timeout=30))[1]
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    clean(stderr)


@pytest.mark.parametrize("target", ["", " ", "dns:///", "dns://8.8.8.8/"])
async def test_a_target_that_names_no_server_is_a_usage_error(target: str, image: Path) -> None:
    """gRPC answered an empty target, or a scheme with no address, with UNKNOWN at the first call."""
    for argv in (("caption", image), ("cancel", "j"), ("models",)):
        done = await run(*argv, "--target", target)
        assert done.returncode == 2 and "argument --target: the target" in done.stderr, done.stderr
        clean(done.stderr)
    with pytest.raises(ValueError, match="target"):
        AnimateClient(target)
