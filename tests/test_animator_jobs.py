"""Video jobs in the animate engine on the tiny random SVD: watchers, offsets, idempotency, detach grace,
cancellation and previews."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from PIL import Image

from animator.engine import AnimateEngine
from animator.events import Chunk, Event, Header, JobState, JobStatus, Preview, Progress, Result, Stage
from animator.families.svd import SvdBackend
from animator.limits import EngineLimits
from animator.params import AnimateInput
from imagewire_serving import errors
from imagewire_serving.metrics import Metrics
from tests.animator_support import tiny_backend
from tests.support import png

SMALL = {"width": 96, "height": 64, "num_frames": 6, "num_inference_steps": 2, "decode_chunk_size": 2}
# Many short steps: long enough to act on a job mid-denoise, with a step every few milliseconds.
LONG = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 100, "decode_chunk_size": 4}


def image() -> bytes:
    return png(Image.linear_gradient("L").convert("RGB").resize((120, 80)))


@pytest.fixture(scope="module")
def backend(one_torch_thread: None) -> SvdBackend:
    return tiny_backend()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(backend: SvdBackend) -> AsyncIterator[AnimateEngine]:
    engine = AnimateEngine([backend], EngineLimits(), Metrics())
    engine.start()
    yield engine
    await engine.close()


def request(**fields: object) -> AnimateInput:
    return AnimateInput(image=image(), **fields)


def video(events: list[Event]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, Chunk))


async def until(stream: AsyncIterator[Event], stage: Stage) -> list[Event]:
    """The events up to and including the first progress of ``stage``."""
    seen: list[Event] = []
    async for event in stream:
        seen.append(event)
        if isinstance(event, Progress) and event.stage is stage:
            return seen
    raise AssertionError(f"no {stage.name} progress")


async def test_watchers_get_the_same_bytes_live_and_late(engine: AnimateEngine) -> None:
    created = engine.animate(request(seed=21, job_id="watched", **SMALL))
    head = await until(created, Stage.DENOISE)
    status = head[0]
    assert isinstance(status, JobStatus) and status.job_id == "watched" and status.created
    live, rest = await asyncio.gather(
        _collect(engine.watch("watched")),  # a second watcher joining mid-denoise
        _collect(created),
    )
    late = [event async for event in engine.watch("watched", 0)]  # after the end: the whole file from the log
    assert video(live) == video(rest) == video(late) and len(video(late)) > 0
    assert isinstance(rest[-1], Result) and rest[-1] == live[-1] == late[-1]
    assert rest[-1].total_bytes == len(video(late))
    assert isinstance(late[0], JobStatus) and (late[0].state, late[0].created) == (JobState.SUCCEEDED, False)
    assert late[0].available_bytes == rest[-1].total_bytes
    # The replay: the latest preview, the header and the latest progress come before the bytes.
    kinds = [type(event) for event in late]
    assert kinds[1:4] == [Preview, Header, Progress] and kinds[4] is Chunk


async def _collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


async def test_watch_from_an_offset_and_its_errors(engine: AnimateEngine) -> None:
    events = [event async for event in engine.animate(request(seed=22, job_id="offsets", **SMALL))]
    data = video(events)
    chunks = [event for event in events if isinstance(event, Chunk)]
    middle = chunks[1].offset + 5  # inside a chunk: the first chunk sent is cut there
    resumed = [event async for event in engine.watch("offsets", middle)]
    sent = [event for event in resumed if isinstance(event, Chunk)]
    assert sent[0].offset == middle and video(resumed) == data[middle:]
    at_end = [event async for event in engine.watch("offsets", len(data))]
    assert not any(isinstance(event, Chunk) for event in at_end) and isinstance(at_end[-1], Result)

    with pytest.raises(errors.OutOfRange, match=f"offset {len(data) + 1} is past the {len(data)} bytes"):
        await anext(engine.watch("offsets", len(data) + 1))
    with pytest.raises(errors.NotFound, match="'nobody'"):
        await anext(engine.watch("nobody"))
    for bad in ("", "x" * 129, "a b", "é"):
        with pytest.raises(errors.InvalidArgument) as caught:
            await anext(engine.watch(bad))
        assert [v.field for v in caught.value.violations] == ["job_id"]
    with pytest.raises(errors.InvalidArgument) as caught:
        await anext(engine.animate(request(job_id="no/slash", **SMALL)))
    assert [v.field for v in caught.value.violations] == ["job_id"]


async def test_animate_again_with_the_same_id_attaches_instead_of_generating(engine: AnimateEngine) -> None:
    started = engine.stats.runs_started
    first = engine.animate(request(job_id="retried", **SMALL))  # no seed: the server picks one
    head = await until(first, Stage.DENOISE)
    retry = [event async for event in engine.animate(request(job_id="retried", **SMALL))]
    rest = [event async for event in first]
    assert engine.stats.runs_started == started + 1
    assert isinstance(retry[0], JobStatus) and not retry[0].created
    assert video(retry) == video(head + rest) and retry[-1] == rest[-1]

    with pytest.raises(errors.FailedPrecondition, match="'retried' exists with different parameters: num_frames"):
        await anext(engine.animate(request(job_id="retried", **{**SMALL, "num_frames": 5})))
    with pytest.raises(errors.FailedPrecondition, match="image"):
        await anext(engine.animate(AnimateInput(image=png(Image.new("RGB", (64, 64))), job_id="retried", **SMALL)))
    # Spelling out a default is the same request as leaving it out.
    again = engine.animate(request(job_id="retried", preview_every=engine.backends[0].accepts.defaults["preview_every"],
                                   **SMALL))
    assert not (await anext(again)).created
    await again.aclose()


async def test_a_job_nobody_watches_runs_for_its_grace_period_then_stops(engine: AnimateEngine) -> None:
    grace = 0.5
    stream = engine.animate(request(seed=1, job_id="abandoned", detach_grace_seconds=grace, **LONG))
    await until(stream, Stage.DENOISE)
    job = engine.jobs.get("abandoned")
    await stream.aclose()
    left, step_when_left = time.monotonic(), job.progress.step
    samples: list[tuple[float, int]] = []
    while not job.state.finished:
        samples.append((time.monotonic() - left, job.progress.step))
        await asyncio.sleep(0.01)
    stopped_after = job.finished_at - left
    final = job.progress.step
    print(f"grace {grace}: stopped after {stopped_after:.3f} s, steps {step_when_left} -> {final}")
    assert job.state is JobState.CANCELLED and "no call watched the job for 0.5 s" in str(job.error)
    assert grace <= stopped_after < grace + 10
    assert final > step_when_left  # it kept denoising while nobody watched
    assert final < LONG["num_inference_steps"]  # and stopped before its end
    assert max(step for at, step in samples if at < grace) <= final  # steps advanced only until the stop
    await asyncio.sleep(0.1)
    assert job.progress.step == final


async def test_a_watcher_back_within_the_grace_period_keeps_the_job(engine: AnimateEngine) -> None:
    stream = engine.animate(request(seed=2, job_id="come-back", detach_grace_seconds=30, **SMALL))
    await until(stream, Stage.DENOISE)
    await stream.aclose()
    events = [event async for event in engine.watch("come-back")]
    assert isinstance(events[-1], Result)
    assert engine.jobs.get("come-back").state is JobState.SUCCEEDED


async def test_cancel_stops_the_job_at_its_next_step_for_every_watcher(engine: AnimateEngine) -> None:
    stream = engine.animate(request(seed=3, job_id="cancelled", **LONG))
    await until(stream, Stage.DENOISE)
    watcher = asyncio.create_task(_collect(engine.watch("cancelled")))
    job = engine.jobs.get("cancelled")
    step_at_cancel = job.progress.step
    status = await engine.cancel("cancelled")
    assert status.state is JobState.CANCELLED
    assert job.progress.step <= step_at_cancel + 2
    for reader in (_collect(stream), watcher):
        with pytest.raises(errors.Cancelled, match="'cancelled' was cancelled"):
            await reader
    # Cancelling a finished job changes nothing; Animate with its id then starts it afresh.
    assert (await engine.cancel("cancelled")).state is JobState.CANCELLED
    fresh = engine.animate(request(seed=3, job_id="cancelled", **LONG))
    assert (await anext(fresh)).created
    await engine.cancel("cancelled")
    await fresh.aclose()


async def test_previews_arrive_while_denoising_in_the_videos_aspect_ratio(engine: AnimateEngine) -> None:
    events = [event async for event in engine.animate(request(seed=4, preview_every=1, **SMALL))]
    kinds = [type(event) for event in events]
    previews = [event for event in events if isinstance(event, Preview)]
    assert [p.step for p in previews] == [1, 2] and kinds.index(Preview) < kinds.index(Header)
    for preview in previews:
        picture = Image.open(io.BytesIO(preview.image))
        assert (picture.format, preview.mime_type) == ("WEBP", "image/webp")
        assert picture.size == (preview.width, preview.height)
        assert preview.width * SMALL["height"] == preview.height * SMALL["width"]  # 3:2, as requested
        assert getattr(picture, "n_frames", 1) == preview.num_frames == 4
        picture.seek(preview.num_frames - 1)
        assert len(set(picture.convert("RGB").getdata())) > 1  # a picture, not a blank
        # Each follows the progress of its step.
        index = events.index(preview)
        assert events[index - 1] == Progress(Stage.DENOISE, preview.step, 2, segment=1, segments=1)
    none = [event async for event in engine.animate(request(seed=4, preview_every=0, **SMALL))]
    assert not any(isinstance(event, Preview) for event in none)
    assert video(none) == video(events)  # previews change nothing in the video
