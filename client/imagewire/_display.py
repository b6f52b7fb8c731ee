"""What the ``imagewire`` command shows and saves while a video streams: a progress display and the previews.

On a terminal the display is a live bar: rich's when the client's ``cli`` extra is installed
(``pip install 'imagewire-client[cli]'``), else one line rewritten in place. Off a terminal (a log, a pipe) it
writes one plain line as each stage first begins, so a log never repeats itself: the stream alternates between
decoding and encoding once per chunk.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from imagewire.client import AnimateEvent, AnimateResult, JobStatus, Preview, Progress, Stage, VideoChunk
from imagewire.client.animate_clients import EventCallback


def stage_name(stage: Stage) -> str:
    """``Stage.ENCODE_IMAGE`` -> ``encode image``."""
    return stage.name.lower().replace("_", " ")


def progress_label(event: Progress) -> str:
    """The stage's name, after its segment in a video of several (``2/3 denoise``)."""
    name = stage_name(event.stage)
    return f"{event.segment}/{event.segments} {name}" if event.segments > 1 and event.segment else name


class ProgressDisplay:
    """The display's bookkeeping: the job line, the stage, the video bytes received. Subclasses draw it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        # The stage shown and its segment: a video of several segments goes through the stages once per segment.
        self._stage: tuple[Stage, int] | None = None
        self.received = 0
        # A job that had ended when the stream began (a watch of a finished job): its replayed last progress
        # event is history, not a stage beginning now.
        self._ended = False

    def __call__(self, event: AnimateEvent) -> None:
        if isinstance(event, JobStatus):
            # The id first, on its own line: with it the video can be watched again or cancelled from another shell.
            queued = f", queue position {event.queue_position}" if event.queue_position else ""
            self.line(f"job {event.job_id} ({event.state.name.lower()}{queued})")
            self._ended = event.state.name in ("SUCCEEDED", "FAILED", "CANCELLED")
        elif isinstance(event, Progress) and not self._ended:
            self.progress(event, changed=(event.stage, event.segment) != self._stage)
            self._stage = (event.stage, event.segment)
        elif isinstance(event, VideoChunk):
            self.received += len(event.data)
            self.bytes_received()
        elif isinstance(event, AnimateResult):
            self.close()

    def line(self, text: str) -> None:
        """Write one line of text above (or instead of) the bar."""
        self._stream.write(text + "\n")
        self._stream.flush()

    def progress(self, event: Progress, *, changed: bool) -> None:
        """Show a progress event; ``changed``: it begins a stage other than the previous event's."""
        raise NotImplementedError

    def bytes_received(self) -> None:
        """Show that more video bytes arrived (``self.received`` in all)."""

    def close(self) -> None:
        """End the display (the stream is done, failed or was interrupted); idempotent."""


class PlainLines(ProgressDisplay):
    """Off a terminal: one line as each stage first begins."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._seen: set[tuple[Stage, int]] = set()

    def progress(self, event: Progress, *, changed: bool) -> None:
        if (event.stage, event.segment) not in self._seen:
            self._seen.add((event.stage, event.segment))
            self.line(f"{progress_label(event)}...")


class TerminalLine(ProgressDisplay):
    """On a terminal without rich: one line, rewritten in place."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        super().__init__(stream)
        self._width = width
        self._drawn: Progress | None = None

    def progress(self, event: Progress, *, changed: bool) -> None:
        self._drawn = event
        self._draw()

    def bytes_received(self) -> None:
        self._draw()

    def _draw(self) -> None:
        if self._drawn is None:
            return
        event = self._drawn
        done = int(self._width * event.step / event.total) if event.total else 0
        bar = "#" * done + "." * (self._width - done)
        self._stream.write(f"\r{progress_label(event):>12} [{bar}] {event.step}/{event.total}  "
                           f"{self.received / 1024:.0f} KiB received ")
        self._stream.flush()

    def line(self, text: str) -> None:
        super().line(("\n" if self._drawn is not None else "") + text)

    def close(self) -> None:
        if self._drawn is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = None


class RichBar(ProgressDisplay):
    """On a terminal with rich: a live bar per stage (its steps, elapsed time) and the video bytes received."""

    def __init__(self, stream: TextIO) -> None:
        """Raises ImportError where rich (the client's optional ``cli`` extra) is not installed."""
        from rich import filesize
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        super().__init__(stream)
        self._bar = Bar(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[received]} received"), TimeElapsedColumn(),
                        console=Console(file=stream))
        self._task: Any = None
        self._size = filesize.decimal

    def line(self, text: str) -> None:
        self._bar.console.print(text, highlight=False, markup=False)

    def progress(self, event: Progress, *, changed: bool) -> None:
        name = progress_label(event)
        # While queued, step is the place in the queue, not work done: no bar to fill.
        total = None if event.stage is Stage.QUEUED or not event.total else event.total
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(name, total=total, completed=event.step, received=self._size(0))
        elif changed:
            self._bar.reset(self._task, description=name, total=total, completed=event.step)
        else:
            self._bar.update(self._task, completed=event.step)

    def bytes_received(self) -> None:
        if self._task is not None:
            self._bar.update(self._task, received=self._size(self.received))

    def close(self) -> None:
        self._bar.stop()


def progress_display(stream: TextIO = sys.stderr) -> ProgressDisplay:
    """The display that fits ``stream``: rich's bar or a rewritten line on a terminal, plain lines elsewhere."""
    if not stream.isatty():
        return PlainLines(stream)
    try:
        return RichBar(stream)
    except ImportError:  # the optional `cli` extra is not installed
        return TerminalLine(stream)


def connecting(target: str, *, quiet: bool) -> None:
    """Say at once what a video command is waiting for (it may wait for the channel up to 30 s)."""
    if not quiet:
        print(f"connecting to {target}...", file=sys.stderr, flush=True)


@contextlib.contextmanager
def showing(quiet: bool, preview_dir: Path | None) -> Iterator[EventCallback | None]:
    """The event callback of one video command (progress unless ``quiet``, previews saved into ``preview_dir``),
    its display ended however the block is left, so a message after it starts on a clean line."""
    display = None if quiet else progress_display()
    try:
        yield display if preview_dir is None else PreviewSaver(preview_dir, display)
    finally:
        if display is not None:
            display.close()


class PreviewSaver:
    """Writes each preview as ``preview-STEP.webp`` (``preview-SEGMENT-STEP.webp`` after the first segment) into a
    directory, and passes every event on."""

    def __init__(self, directory: Path, then: EventCallback | None) -> None:
        self._directory = directory
        self._then = then
        directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: AnimateEvent) -> None:
        if isinstance(event, Preview):
            suffix = event.mime_type.rsplit("/", 1)[-1]
            segment = f"{event.segment}-" if event.segment > 1 else ""
            (self._directory / f"preview-{segment}{event.step:04d}.{suffix}").write_bytes(event.image)
        if self._then is not None:
            self._then(event)
