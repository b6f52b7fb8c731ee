"""What the ``imagewire`` command shows and saves while a video streams: a progress display and the previews."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from imagewire.client import AnimateEvent, AnimateResult, JobStatus, Preview, Progress, VideoChunk


class ProgressBar:
    """A one-line progress display on a terminal; one line per stage when output is not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._tty = stream.isatty()
        self._last_stage: int | None = None
        self._bytes = 0

    def __call__(self, event: AnimateEvent) -> None:
        if isinstance(event, JobStatus):
            self._job(event)
        elif isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, VideoChunk):
            self._bytes += len(event.data)
        elif isinstance(event, AnimateResult):
            self._finish()

    def _job(self, event: JobStatus) -> None:
        # The id first, on its own line: with it the video can be watched again or cancelled from another shell.
        queued = f", queue position {event.queue_position}" if event.queue_position else ""
        self._stream.write(f"job {event.job_id} ({event.state.name.lower()}{queued})\n")
        self._stream.flush()

    def _progress(self, event: Progress) -> None:
        name = event.stage.name.lower().replace("_", " ")
        if self._tty:
            done = int(self._width * event.step / event.total) if event.total else 0
            bar = "#" * done + "." * (self._width - done)
            self._stream.write(f"\r{name:>12} [{bar}] {event.step}/{event.total}  {self._bytes / 1024:.0f} KiB sent ")
            self._stream.flush()
        elif event.stage != self._last_stage:
            self._stream.write(f"{name}...\n")
        self._last_stage = event.stage

    def _finish(self) -> None:
        if self._tty:
            self._stream.write("\n")
        self._stream.flush()


class PreviewSaver:
    """Writes each preview as ``preview-STEP.webp`` into a directory, and passes every event on."""

    def __init__(self, directory: Path, then: Callable[[AnimateEvent], None] | None) -> None:
        self._directory = directory
        self._then = then
        directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: AnimateEvent) -> None:
        if isinstance(event, Preview):
            suffix = event.mime_type.rsplit("/", 1)[-1]
            (self._directory / f"preview-{event.step:04d}.{suffix}").write_bytes(event.image)
        if self._then is not None:
            self._then(event)
