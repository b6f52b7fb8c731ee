"""The blocking and asyncio animate clients: the I/O of :mod:`imagewire.client.animate`'s calls.

Both have the same methods. The downloads to a file resume after dropped connections as
:class:`~imagewire.client.Resume` says; a job this client started is cancelled when the caller leaves it (closing
``animate``'s iterator, Ctrl-C, a cancelled task), never when only the connection failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Unpack

import grpc

from imagewire.animate.v1 import animate_pb2_grpc
from imagewire.client._core import CallArgs, ImageInput, PreparedCall
from imagewire.client._resume import Download, Resume
from imagewire.client._shell import AsyncShell, BlockingShell
from imagewire.client.animate import AnimateArgs, AnimateCore
from imagewire.client.animate_types import AnimateEvent, AnimateModelList, AnimateResult, JobStatus
from imagewire.client.errors import ImagewireError
from imagewire.client.interrupted import Interrupted, Outcome, Stop
from imagewire.client.video_sink import VideoSink

# A cancel sent because the caller is leaving: it must not keep them long.
CANCEL_TIMEOUT_S = 10.0
# gRPC's wait for a connection (channel_ready_future) has a thread poll the channel every 0.2 s until it sees
# nobody waiting; a channel closed under it makes that thread die with a traceback on stderr ("Cannot monitor
# channel state: Channel closed!"). Closing waits out two polls after the last wait.
READY_POLLER_S = 0.5

EventCallback = Callable[[AnimateEvent], None]
#: Five reconnections after 0.5, 1, 2, 4 and 8 s, each waiting up to 30 s for the channel.
DEFAULT_RESUME = Resume()


def _planned(sink: VideoSink, plan: Callable[[], Download]) -> Download:
    """The download ``plan`` makes; a request refused before sending (a bad field, a bad deadline) leaves no
    empty file behind."""
    try:
        return plan()
    except BaseException:
        sink.abort()
        raise


def _reconnect_failed(target: str, timeout: float) -> ImagewireError:
    return ImagewireError(grpc.StatusCode.UNAVAILABLE, f"could not connect to {target} within {timeout:.3g} s")


class AnimateClient(BlockingShell[AnimateCore]):
    """Blocking client for the animate service: default deadline 900 s per stream, 30 s for ListModels and
    CancelAnimation. See :class:`imagewire.client.BlockingShell` for the options."""

    _core_type = AnimateCore
    _stub_type = animate_pb2_grpc.AnimateServiceStub

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)
        self._interrupted = threading.Event()
        self._ready: grpc.Future[None] | None = None
        self._ready_ended: float | None = None

    def animate(self, image: ImageInput, **args: Unpack[AnimateArgs]) -> Iterator[AnimateEvent]:
        """Generate a video from one image, yielding the stream's events as they arrive; leaving early cancels
        the job.

        ``args``: AnimateRequest fields (``model_id``, ``format``, ``job_id``, any of :data:`PARAMETERS`...) and
        the call's ``timeout`` and ``request_id``. They are checked here, before the call starts.
        """
        call = self._core.animate(image, **args)
        return self._owned(call, self._stream(self._stub.Animate, call))

    def watch(self, job_id: str, *, offset: int = 0, **args: Unpack[CallArgs]) -> Iterator[AnimateEvent]:
        """Follow job ``job_id``: its status, latest preview, header and progress, its video from byte ``offset``,
        then live to the result. Leaving early stops watching; the job goes on."""
        return self._stream(self._stub.WatchAnimation, self._core.watch(job_id, offset=offset, **args))

    def cancel(self, job_id: str, **args: Unpack[CallArgs]) -> JobStatus:
        """Stop job ``job_id`` at its next step; returns its status once it has stopped (or had already ended)."""
        return self._unary(self._stub.CancelAnimation, self._core.cancel(job_id, **args))

    def animate_to_file(self, image: ImageInput, path: str | Path | BinaryIO, *, on_event: EventCallback | None = None,
                        resume: Resume = DEFAULT_RESUME, **args: Unpack[AnimateArgs]) -> AnimateResult:
        """Generate a video into ``path`` while it streams, resuming after dropped connections; returns the
        verified result. Interrupting it (Ctrl-C) cancels the job."""
        sink = VideoSink(path, on_event)
        download = _planned(sink, lambda: self._core.animate_download(image, sink, resume, **args))
        return self._download(download, sink, owned=True)

    def watch_to_file(self, job_id: str, path: str | Path, *, offset: int = 0,
                      on_event: EventCallback | None = None, resume: Resume = DEFAULT_RESUME,
                      **args: Unpack[CallArgs]) -> AnimateResult:
        """Write job ``job_id``'s video into ``path`` (keeping its first ``offset`` bytes, already there), resuming
        after dropped connections; returns the verified result."""
        sink = VideoSink(path, on_event, offset=offset)
        return self._download(_planned(sink, lambda: self._core.watch_download(job_id, sink, resume, **args)), sink,
                              owned=False)

    def list_models(self, **args: Unpack[CallArgs]) -> AnimateModelList:
        """The server's loaded models with their limits and defaults."""
        return self._unary(self._stub.ListModels, self._core.list_models(**args))

    def interrupt(self) -> None:
        """Stop the download to a file in progress as Ctrl-C would: it raises :class:`Interrupted` saying what
        became of the job (cancelled if this client started it). Safe from any thread; a SIGINT handler calls it
        from another thread, since it takes gRPC's locks. A download started after it is interrupted at once."""
        self._interrupted.set()
        for pending in (self._in_flight, self._ready):
            cancel = getattr(pending, "cancel", None)
            if cancel is not None:
                cancel()

    def close(self) -> None:
        """Close the channel, cancelling calls still in flight (after gRPC's poller has left a recent wait for
        the connection: :data:`READY_POLLER_S`)."""
        if self._ready_ended is not None:
            time.sleep(max(0.0, self._ready_ended + READY_POLLER_S - time.monotonic()))
        super().close()

    def _download(self, download: Download, sink: VideoSink, *, owned: bool) -> AnimateResult:
        attempt = download.first
        with sink, self._stopping(download, sink, owned=owned):
            while True:
                if attempt.pause:
                    if self._interrupted.wait(attempt.pause):
                        raise KeyboardInterrupt
                    self._wait_ready(download.ready_timeout())
                    download.connected = True
                try:
                    self._check_interrupted()
                    # Read to the end of the stream, not just to the result: leaving early would cancel the call.
                    for event in self._stream(getattr(self._stub, attempt.method), attempt.call):
                        # An interrupt() between the check above and the call's start found no call to cancel.
                        self._check_interrupted()
                        download.saw(event, attempt)
                        sink.feed(event)
                    return sink.finish()
                except ImagewireError as error:
                    self._check_interrupted()  # the failure is the interruption's cancelled call
                    attempt = download.after(error, attempt)

    def _check_interrupted(self) -> None:
        if self._interrupted.is_set():
            raise KeyboardInterrupt

    def _wait_ready(self, timeout: float) -> None:
        """Wait for the channel to connect; a channel that does not within ``timeout`` ends the download."""
        self._ready = grpc.channel_ready_future(self._channel)
        try:
            self._check_interrupted()
            self._ready.result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise _reconnect_failed(self.target, timeout) from None
        except grpc.FutureCancelledError:
            raise KeyboardInterrupt from None
        finally:
            self._ready.cancel()
            self._ready = None
            self._ready_ended = time.monotonic()

    @contextlib.contextmanager
    def _stopping(self, download: Download, sink: VideoSink, *, owned: bool) -> Iterator[None]:
        """Leave a download that was interrupted (Ctrl-C, :meth:`interrupt`) or whose event callback failed:
        cancel the job if it is this client's own; on Ctrl-C raise :class:`Interrupted` saying what became of it."""
        try:
            yield
        except ImagewireError:
            raise  # the call failed (or the server ended the job): nothing of ours to cancel
        except KeyboardInterrupt:
            self._interrupted.clear()
            stop = self._stop(download, owned=owned)
            raise Interrupted(download.job_id, stop, written=sink.written, kept=sink.keeps) from None
        except BaseException:
            self._stop(download, owned=owned)
            raise

    def _stop(self, download: Download, *, owned: bool) -> Stop:
        if not owned or download.created is False:
            return Stop(Outcome.DETACHED)
        try:
            return Stop(Outcome.CANCELLED, status=self.cancel(download.job_id, timeout=CANCEL_TIMEOUT_S))
        except ImagewireError as error:
            never = not download.reached and error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
            return Stop(Outcome.NEVER_STARTED if never else Outcome.NOT_CANCELLED, error=error)

    def _owned(self, call: PreparedCall[AnimateEvent], events: Iterator[AnimateEvent]) -> Iterator[AnimateEvent]:
        job = _Job(call)
        try:
            for event in events:
                yield job.saw(event)
        except ImagewireError:
            raise  # the call failed (or the server ended the job): nothing of ours to cancel
        except BaseException:  # Ctrl-C, or GeneratorExit from an iterator closed early
            if job.mine is not None:
                with contextlib.suppress(ImagewireError):
                    self.cancel(job.mine, timeout=CANCEL_TIMEOUT_S)
            raise


class AsyncAnimateClient(AsyncShell[AnimateCore]):
    """Asyncio client for the animate service; the same options and methods as :class:`AnimateClient`."""

    _core_type = AnimateCore
    _stub_type = animate_pb2_grpc.AnimateServiceStub

    def animate(self, image: ImageInput, **args: Unpack[AnimateArgs]) -> AsyncIterator[AnimateEvent]:
        """Generate a video from one image, yielding the stream's events as they arrive; leaving early cancels
        the job."""
        call = self._core.animate(image, **args)
        return self._owned(call, self._stream(self._stub.Animate, call))

    def watch(self, job_id: str, *, offset: int = 0, **args: Unpack[CallArgs]) -> AsyncIterator[AnimateEvent]:
        """Follow job ``job_id`` from byte ``offset`` of its video; leaving early stops watching."""
        return self._stream(self._stub.WatchAnimation, self._core.watch(job_id, offset=offset, **args))

    async def cancel(self, job_id: str, **args: Unpack[CallArgs]) -> JobStatus:
        """Stop job ``job_id`` at its next step; returns its status once it has stopped (or had already ended)."""
        return await self._unary(self._stub.CancelAnimation, self._core.cancel(job_id, **args))

    async def animate_to_file(self, image: ImageInput, path: str | Path | BinaryIO, *,
                              on_event: EventCallback | None = None, resume: Resume = DEFAULT_RESUME,
                              **args: Unpack[AnimateArgs]) -> AnimateResult:
        """Generate a video into ``path`` while it streams, resuming after dropped connections; returns the
        verified result. Cancelling the task cancels the job."""
        sink = VideoSink(path, on_event)
        download = _planned(sink, lambda: self._core.animate_download(image, sink, resume, **args))
        return await self._download(download, sink, owned=True)

    async def watch_to_file(self, job_id: str, path: str | Path, *, offset: int = 0,
                            on_event: EventCallback | None = None, resume: Resume = DEFAULT_RESUME,
                            **args: Unpack[CallArgs]) -> AnimateResult:
        """Write job ``job_id``'s video into ``path`` from byte ``offset``, resuming after dropped connections."""
        sink = VideoSink(path, on_event, offset=offset)
        download = _planned(sink, lambda: self._core.watch_download(job_id, sink, resume, **args))
        return await self._download(download, sink, owned=False)

    async def list_models(self, **args: Unpack[CallArgs]) -> AnimateModelList:
        """The server's loaded models with their limits and defaults."""
        return await self._unary(self._stub.ListModels, self._core.list_models(**args))

    async def _download(self, download: Download, sink: VideoSink, *, owned: bool) -> AnimateResult:
        attempt = download.first
        with sink:
            async with self._cancel_on_exit(lambda: download.job_id if owned and download.created is not False
                                            else None):
                while True:
                    if attempt.pause:
                        await asyncio.sleep(attempt.pause)
                        await self._wait_ready(download.ready_timeout())
                        download.connected = True
                    try:
                        async for event in self._stream(getattr(self._stub, attempt.method), attempt.call):
                            download.saw(event, attempt)
                            sink.feed(event)
                        return sink.finish()
                    except ImagewireError as error:
                        attempt = download.after(error, attempt)

    async def _wait_ready(self, timeout: float) -> None:
        """Wait for the channel to connect; a channel that does not within ``timeout`` ends the download."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise _reconnect_failed(self.target, timeout) from None

    async def _owned(self, call: PreparedCall[AnimateEvent],
                     events: AsyncGenerator[AnimateEvent, None]) -> AsyncIterator[AnimateEvent]:
        job = _Job(call)
        async with self._cancel_on_exit(lambda: job.mine), contextlib.aclosing(events):
            async for event in events:
                yield job.saw(event)

    @contextlib.asynccontextmanager
    async def _cancel_on_exit(self, job_id: Callable[[], str | None]) -> AsyncIterator[None]:
        """Cancel the job (``job_id()``, None: not ours to cancel) when the block is left other than by its end
        or a failed call."""
        try:
            yield
        except ImagewireError:
            raise
        except BaseException:  # a cancelled task, or GeneratorExit from an iterator closed early
            mine = job_id()
            if mine is not None:
                with contextlib.suppress(ImagewireError, asyncio.CancelledError):
                    await self.cancel(mine, timeout=CANCEL_TIMEOUT_S)
            raise


class _Job:
    """The job of an Animate call, and whether it is the caller's to cancel when they leave: not once the call's
    JobStatus says it attached to a job another call started (``created`` false)."""

    def __init__(self, call: PreparedCall[AnimateEvent]) -> None:
        # PreparedCall.request is a Message; an Animate call's is an AnimateRequest.
        self.mine: str | None = call.request.job_id  # type: ignore[attr-defined]

    def saw(self, event: AnimateEvent) -> AnimateEvent:
        if isinstance(event, JobStatus) and not event.created:
            self.mine = None
        return event
