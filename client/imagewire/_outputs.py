"""What the ``imagewire`` command writes: its output file and preview directory, checked before any call (a path
that cannot be written is a bad command line, exit 2; missing directories are created), standard output for
``-o -``, and what an interrupted download left of its job and its file."""

from __future__ import annotations

import os
from pathlib import Path

from imagewire._formats import UsageError
from imagewire.client import Interrupted as DownloadInterrupted
from imagewire.client import Outcome

#: ``-o -``: the video goes to standard output.
STDOUT = Path("-")


def checked_output(output: Path) -> Path:
    """``output``, once it can be written: its directory created if missing; UsageError saying why not."""
    if output == STDOUT:
        return output
    if output.is_dir():
        raise UsageError(f"-o {output} is a directory: name a file in it")
    _writable_directory(output.parent, f"-o {output}")
    return output


def checked_preview_dir(directory: Path | None) -> Path | None:
    """``--preview-dir``, created if missing; UsageError if it is a file or cannot be written."""
    if directory is not None:
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"--preview-dir {directory} is a file, not a directory")
        _writable_directory(directory, f"--preview-dir {directory}")
    return directory


def _writable_directory(directory: Path, flag: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{flag}: cannot create the directory {directory} ({error.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: the directory {directory} is not writable")


def job_after(stop: DownloadInterrupted, target: str) -> str:
    """What became of an interrupted animate's job."""
    job, outcome = stop.job_id, stop.stop
    if outcome.outcome is Outcome.CANCELLED and outcome.status is not None:
        state = outcome.status.state.name.lower()
        return f"job {job} cancelled" if state == "cancelled" else f"job {job} had already {state}"
    if outcome.outcome is Outcome.DETACHED:
        return f"job {job} goes on: another call started it (this one only followed it, and stopped)"
    if outcome.outcome is Outcome.NEVER_STARTED:
        return f"job {job} never started: {target} was not reached"
    return (f"job {job} may go on: the cancel failed ({outcome.error}); it stops once no call has watched it for "
            "its detach grace")


def file_after(stop: DownloadInterrupted, output: Path) -> str:
    """What an interrupted download left of its output file."""
    if output == STDOUT:
        return f"{stop.written} bytes of video had gone to standard output"
    if stop.kept:
        return f"{output} keeps its first {stop.written} bytes"
    if stop.written:
        return f"the partial {output} ({stop.written} bytes) was removed"
    return f"no video had arrived, so there is no {output}"
