"""The client's jobs without a server: job ids and their metadata, the resume plan of a download, and a sink that
continues a file."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import grpc
import pytest
from imagewire import cli
from imagewire.animate.v1 import animate_pb2
from imagewire.client import (
    JOB_ID_KEY,
    AnimateClient,
    AnimateCore,
    ImagewireError,
    JobState,
    JobStatus,
    ProvenanceChanged,
    Resume,
    VideoChunk,
    VideoSink,
)
from imagewire.client._resume import Download, dropped
from imagewire.client.animate import decode_event

from tests.support import free_port, solid

# A connection dropped after the stream had answered (a refusal before any answer is not a drop: see below).
DROP = ImagewireError(grpc.StatusCode.UNAVAILABLE, "Socket closed", responses_received=2)
REFUSED = ImagewireError(grpc.StatusCode.UNAVAILABLE, "no healthy upstream")


def test_animate_calls_carry_a_job_id_in_the_request_and_the_metadata() -> None:
    core = AnimateCore()
    chosen = core.animate(b"img")
    assert len(chosen.request.job_id) == 32
    assert (JOB_ID_KEY, chosen.request.job_id) in chosen.options.metadata
    given = core.animate(b"img", job_id="mine")
    assert given.request.job_id == "mine" and (JOB_ID_KEY, "mine") in given.options.metadata
    for call in (core.watch("mine", offset=7), core.cancel("mine")):
        assert (JOB_ID_KEY, "mine") in call.options.metadata
    assert core.watch("mine", offset=7).request.offset == 7
    assert core.cancel("mine").options.timeout == core.control_timeout


def download(tmp_path: Path, resume: Resume, *, timeout: float = 900) -> tuple[Download, VideoSink]:
    sink = VideoSink(tmp_path / "v.mp4")
    return AnimateCore().animate_download(b"img", sink, resume, job_id="job-1", timeout=timeout, seed=3), sink


def test_a_drop_resumes_from_the_bytes_written_with_growing_pauses_then_gives_up(tmp_path: Path) -> None:
    plan, sink = download(tmp_path, Resume(attempts=4, backoff_s=0.5, max_backoff_s=1.5))
    attempt = plan.first
    assert attempt.method == "Animate" and attempt.pause == 0
    sink.feed(VideoChunk(b"abc", 0))
    pauses = []
    for _ in range(4):
        attempt = plan.after(DROP, attempt)
        pauses.append(attempt.pause)
        assert attempt.method == "WatchAnimation"
        request = attempt.call.request
        assert (request.job_id, request.offset) == ("job-1", 3)
        assert attempt.call.options.request_id == plan.first.call.options.request_id
        assert attempt.call.options.timeout < 900  # what is left of the download's deadline
    assert pauses == [0.5, 1.0, 1.5, 1.5]
    with pytest.raises(ImagewireError) as caught:
        plan.after(DROP, attempt)
    assert caught.value is DROP
    sink.abort()


def test_a_call_refused_before_answering_is_sent_again_within_the_deadline_not_counted_as_a_resume(
        tmp_path: Path) -> None:
    """A front door with no ready replica (Envoy's "no healthy upstream"), a replica loading: the same call again
    (Animate: the same job id, so the same job), after growing pauses, for as long as the deadline allows."""
    plan, sink = download(tmp_path, Resume(attempts=1, backoff_s=0.5, max_backoff_s=2.0), timeout=60)
    attempt = plan.first
    pauses = []
    for _ in range(8):  # more than Resume.attempts: refusals are not resumes
        attempt = plan.after(REFUSED, attempt)
        pauses.append(attempt.pause)
        assert attempt.method == "Animate" and attempt.call.request.job_id == "job-1"
    assert pauses == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0] and plan.resumes == 0
    short, _ = download(tmp_path, Resume(backoff_s=0.5), timeout=0.2)
    with pytest.raises(ImagewireError) as caught:  # the pause would outlast the deadline
        short.after(REFUSED, short.first)
    assert caught.value is REFUSED
    sink.abort()


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.DATA_LOSS, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_failure_other_than_a_drop_ends_the_download(tmp_path: Path, code: grpc.StatusCode) -> None:
    plan, sink = download(tmp_path, Resume())
    with pytest.raises(ImagewireError):
        plan.after(ImagewireError(code, "no"), plan.first)
    sink.abort()


def test_a_lost_job_is_generated_again_under_its_id_and_the_file_restarted(tmp_path: Path) -> None:
    plan, sink = download(tmp_path, Resume())
    sink.feed(VideoChunk(b"abc", 0))
    watch = plan.after(DROP, plan.first)
    again = plan.after(ImagewireError(grpc.StatusCode.NOT_FOUND, "job 'job-1' is not on this server"), watch)
    assert again.method == "Animate" and again.call.request.job_id == "job-1"
    assert again.call.request.seed == 3 and sink.written == 0
    sink.abort()
    # Watching alone, there is nothing to start again.
    watcher = VideoSink(tmp_path / "w.mp4")
    plan = AnimateCore().watch_download("job-1", watcher, Resume())
    lost = plan.after(DROP, plan.first)
    with pytest.raises(ImagewireError):
        plan.after(ImagewireError(grpc.StatusCode.NOT_FOUND, "gone"), lost)
    watcher.abort()


def test_no_resume_after_the_deadline(tmp_path: Path) -> None:
    plan, sink = download(tmp_path, Resume(backoff_s=5), timeout=1)
    with pytest.raises(ImagewireError):
        plan.after(DROP, plan.first)  # the pause alone would outlast the deadline
    sink.abort()


@pytest.mark.parametrize("bad", [{"attempts": -1}, {"backoff_s": 0}, {"max_backoff_s": float("inf")},
                                 {"reconnect_timeout_s": -1}])
def test_resume_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Resume(**bad)


def test_a_sink_continues_an_existing_file_from_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"abcXYZ")  # 3 good bytes, then the rest of an interrupted write
    with VideoSink(path, offset=3) as sink:
        sink.feed(VideoChunk(b"de", 3))
        result = decode_event(animate_pb2.AnimateResponse(result=animate_pb2.AnimateResult(
            total_bytes=5, sha256=hashlib.sha256(b"abcde").digest())))
        sink.feed(result)
    assert path.read_bytes() == b"abcde"
    with pytest.raises(ValueError, match="fewer than the offset 9"):
        VideoSink(path, offset=9)
    with pytest.raises(ImagewireError), VideoSink(path, offset=5) as sink:
        sink.feed(VideoChunk(b"!", 4))  # not where the file ends: DATA_LOSS, and the file is kept
    assert path.read_bytes() == b"abcde"


def test_watch_and_cancel_commands_parse() -> None:
    args = cli._parser().parse_args(["watch", "job-1", "-o", "out.mp4", "--offset", "10", "--preview-dir", "p"])
    assert (args.job_id, args.offset, str(args.preview_dir)) == ("job-1", 10, "p")
    assert cli._parser().parse_args(["cancel", "job-1"]).job_id == "job-1"
    assert cli._parser().parse_args(["animate", "a.png", "-o", "o.mp4", "--job-id", "j"]).job_id == "j"


def status(key: str) -> JobStatus:
    return JobStatus("job-1", JobState.RUNNING, 0, False, 0, key)


def test_a_stream_from_a_server_of_another_provenance_starts_the_file_over(tmp_path: Path) -> None:
    plan, sink = download(tmp_path, Resume())
    sink.feed(status("a" * 16))
    sink.feed(VideoChunk(b"abc", 0))
    watch = plan.after(DROP, plan.first)
    sink.feed(status("a" * 16))  # the same provenance: its bytes continue the file
    sink.feed(VideoChunk(b"de", 3))
    again = plan.after(DROP, watch)
    with pytest.raises(ProvenanceChanged) as caught:
        sink.feed(status("b" * 16))  # another: before any of its bytes
    assert caught.value.code is grpc.StatusCode.ABORTED and sink.written == 5
    over = plan.after(caught.value, again)
    assert (over.method, over.call.request.offset, over.pause) == ("WatchAnimation", 0, 0.0)
    assert sink.written == 0 and plan.resumes == 3
    sink.feed(status("b" * 16))  # the new stream's provenance is now the file's
    sink.feed(VideoChunk(b"xyz", 0))
    assert sink.provenance == "b" * 16
    sink.abort()


def test_a_server_that_reports_no_provenance_is_not_told_apart(tmp_path: Path) -> None:
    with VideoSink(tmp_path / "v.mp4") as sink:
        sink.feed(status("a" * 16))
        sink.feed(VideoChunk(b"abc", 0))
        sink.feed(status(""))  # an older server
        sink.feed(VideoChunk(b"d", 3))
        assert sink.written == 4 and sink.provenance == "a" * 16
        sink.abort()


def test_a_stream_reset_is_a_drop_and_a_servers_internal_is_not(tmp_path: Path) -> None:
    plan, sink = download(tmp_path, Resume())
    for message in ("Stream removed", "Received RST_STREAM with error code 2",
                    "Stream removed (RST_STREAM (Received RST_STREAM with error code 2))"):
        reset = ImagewireError(grpc.StatusCode.INTERNAL, message, responses_received=2)
        assert dropped(reset)
        assert plan.after(reset, plan.first).method == "WatchAnimation"
    served = ImagewireError(grpc.StatusCode.INTERNAL, "internal error; the server logged the details")
    assert not dropped(served)
    with pytest.raises(ImagewireError):
        plan.after(served, plan.first)
    sink.abort()


def test_a_failed_download_never_removes_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A download into a device or a pipe (/dev/null, a FIFO) that fails must leave it be: the sink removes only a
    regular file it wrote (it once unlinked /dev/null, as root)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        # A FIFO stands for /dev/null here: were the sink wrong again, the test must not break the machine.
        with pytest.raises(ImagewireError), VideoSink(fifo):
            raise DROP
        assert fifo.exists() and not fifo.is_file()
    finally:
        os.close(reader)
    regular = tmp_path / "v.mp4"
    with pytest.raises(ImagewireError), VideoSink(regular):
        raise DROP
    assert not regular.exists()


def test_a_client_closed_just_after_waiting_for_its_server_leaves_no_thread_to_fail(tmp_path: Path) -> None:
    """gRPC's wait for a connection polls the channel from a thread of its own for up to two 0.2 s polls after the
    wait ends: a client closed at once (a download that could not connect, then ``with`` leaving) had that thread
    die on the closed channel, a traceback on stderr ("Cannot monitor channel state: Channel closed!")."""
    died: list[threading.ExceptHookArgs] = []
    previous, threading.excepthook = threading.excepthook, died.append
    try:
        # The poller dies only when the close lands between two of its polls: about one close in three did.
        for _ in range(5):
            with AnimateClient(f"127.0.0.1:{free_port()}") as client, pytest.raises(ImagewireError) as caught:
                client.animate_to_file(solid(), tmp_path / "v.mp4",
                                       resume=Resume(attempts=1, backoff_s=0.01, reconnect_timeout_s=0.3))
            assert "could not connect" in caught.value.message
        time.sleep(1.0)  # longer than the poller outlives a wait
    finally:
        threading.excepthook = previous
    assert [f"{type(hook.exc_value).__name__}: {hook.exc_value}" for hook in died] == []
