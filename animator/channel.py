"""The per-request channel carrying a generation's events from the device thread to the request's coroutine.

It is bounded by the video bytes not yet read: a slow reader pauses the generation instead of letting encoded
video pile up in memory. Cancelling it (the reader left) makes the worker's next ``put`` raise :class:`Stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

from animator.events import Chunk, Event
from imagewire_serving import errors


class Stop(Exception):
    """Raised inside the worker (also from the pipeline's step callback) to abandon a generation."""

    def __init__(self, error: errors.ServingError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class End:
    """The last item of a channel: the error the stream ends with, or None."""

    error: BaseException | None


class EventChannel:
    """Events from the worker thread to the event loop, bounded by the bytes not yet read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending_bytes: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Event | End] = asyncio.Queue()
        self._max_pending = max_pending_bytes
        self._pending = 0
        self._space = threading.Condition()
        self.cancelled = threading.Event()

    def put(self, event: Event) -> None:
        """From the worker: deliver an event, waiting while too many bytes are unread. Raises Stop if cancelled."""
        size = len(event.data) if isinstance(event, Chunk) else 0
        with self._space:
            while self._pending and self._pending + size > self._max_pending and not self.cancelled.is_set():
                self._space.wait(timeout=0.5)
            if self.cancelled.is_set():
                raise Stop(errors.Cancelled("the call was cancelled"))
            self._pending += size
        self._deliver(event)

    def put_nowait(self, event: Event) -> None:
        """From the event loop: deliver an event that carries no bytes."""
        self._queue.put_nowait(event)

    def close(self, error: BaseException | None) -> None:
        """From the worker: the last item (never raises: there may be nobody left to tell)."""
        with contextlib.suppress(Stop):
            self._deliver(End(error))

    def fail_nowait(self, error: BaseException) -> None:
        """From the event loop: end the stream with an error before the worker took the request."""
        self._queue.put_nowait(End(error))

    def _deliver(self, item: Event | End) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is reading any more
            self.cancelled.set()
            raise Stop(errors.Unavailable("the server is shutting down")) from None

    async def get(self) -> Event | End:
        item = await self._queue.get()
        if isinstance(item, Chunk):
            with self._space:
                self._pending -= len(item.data)
                self._space.notify_all()
        return item

    def cancel(self) -> None:
        self.cancelled.set()
        with self._space:
            self._space.notify_all()
