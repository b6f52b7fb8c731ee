"""Writing an animate stream's video to a file, across resumed streams, and verifying it at the end."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Self

import grpc

from imagewire.client.animate_types import AnimateEvent, AnimateResult, JobStatus, VideoChunk, VideoHeader
from imagewire.client.errors import ImagewireError

# Reading back the part of a file a resumed download keeps, to hash it.
_READ_BYTES = 1024 * 1024


class ProvenanceChanged(ImagewireError):
    """A stream continuing a file came from a server whose provenance key differs from that of the stream the
    file's bytes came from: its bytes may not continue them (ABORTED; a download starts the file over)."""


class VideoSink:
    """Writes a stream's chunks to a file in order and verifies the result's length and SHA-256.

    ``offset`` keeps the first ``offset`` bytes of an existing file (a download picked up where it stopped);
    the stream must then continue from there. ``on_event`` sees every event first. Used as a context manager,
    it removes the file when the block fails, unless it was resuming one. ``provenance`` is the provenance key of
    the server the bytes came from (from each stream's first event); a stream from a server of another key raises
    :class:`ProvenanceChanged` before any of its bytes are written.

    ``path`` may also be an open binary stream (standard output): it is written in order and flushed, never
    closed nor removed, and a video that would have to start over (the server lost the job) fails instead.
    """

    def __init__(self, path: str | Path | BinaryIO, on_event: Callable[[AnimateEvent], None] | None = None, *,
                 offset: int = 0) -> None:
        self._on_event = on_event
        self._digest = hashlib.sha256()
        self._keep = offset > 0
        self._file: BinaryIO
        self._stream = not isinstance(path, str | Path)
        if not isinstance(path, str | Path):
            if offset:
                raise ValueError("a video written to a stream starts at its first byte (offset 0)")
            self.path = Path(str(getattr(path, "name", "<stream>")))
            self._file, self._keep = path, True
        else:
            self.path = Path(path)
            # Only a regular file this sink wrote is ever removed: never a device (/dev/null), pipe or socket.
            self._keep = self._keep or (self.path.exists() and not self.path.is_file())
            self._file = self.path.open("r+b" if offset else "wb")
            if offset:
                self._hash_existing(offset)
        self._written = offset
        self.header: VideoHeader | None = None
        self.result: AnimateResult | None = None
        self.provenance = ""

    @property
    def keeps(self) -> bool:
        """Whether the file stays when the download fails: it continues one that existed."""
        return self._keep

    @property
    def written(self) -> int:
        """The bytes of the video in the file so far: where a resumed stream must continue."""
        return self._written

    def _hash_existing(self, offset: int) -> None:
        remaining = offset
        while remaining:
            data = self._file.read(min(remaining, _READ_BYTES))
            if not data:
                self._file.close()
                raise ValueError(f"{self.path} has {offset - remaining} bytes, fewer than the offset {offset}")
            self._digest.update(data)
            remaining -= len(data)
        self._file.truncate(offset)

    def feed(self, event: AnimateEvent) -> AnimateResult | None:
        """Consume one event; returns the result once the stream's final event arrives."""
        if self._on_event is not None:
            self._on_event(event)
        if isinstance(event, JobStatus):
            self._follow(event.provenance_key)
        elif isinstance(event, VideoHeader):
            self.header = event
        elif isinstance(event, VideoChunk):
            if event.offset != self._written:
                raise ImagewireError(
                    grpc.StatusCode.DATA_LOSS, f"chunk at offset {event.offset}, expected {self._written}"
                )
            self._file.write(event.data)
            self._digest.update(event.data)
            self._written += len(event.data)
        elif isinstance(event, AnimateResult):
            self._close()
            if event.total_bytes != self._written or event.sha256 != self._digest.digest():
                raise ImagewireError(
                    grpc.StatusCode.DATA_LOSS,
                    f"received {self._written} bytes that do not match the result "
                    f"({event.total_bytes} bytes, sha256 {event.sha256.hex()})",
                )
            self.result = event
        return self.result

    def _follow(self, provenance: str) -> None:
        """A stream from a server of key ``provenance`` begins (empty: a server that does not say)."""
        if provenance and self.provenance and provenance != self.provenance and self._written:
            raise ProvenanceChanged(
                grpc.StatusCode.ABORTED,
                f"the stream comes from a server of provenance {provenance}, but the {self._written} bytes "
                f"received came from one of provenance {self.provenance}: its bytes may not continue them",
            )
        self.provenance = provenance or self.provenance

    def _close(self) -> None:
        if self._stream:
            self._file.flush()  # a stream (standard output) is the caller's to close
        else:
            self._file.close()

    def restart(self) -> None:
        """Empty the file: the video will be streamed again from its first byte (from any server)."""
        if self._stream:
            raise ImagewireError(grpc.StatusCode.DATA_LOSS, f"the server lost the job after {self._written} bytes "
                                 f"had gone to {self.path}, which cannot be rewound to start the video over")
        self._file.seek(0)
        self._file.truncate(0)
        self._digest = hashlib.sha256()
        self._written = 0
        self.provenance = ""

    def finish(self) -> AnimateResult:
        """The verified result, once the stream has ended."""
        if self.result is None:
            raise ImagewireError(grpc.StatusCode.DATA_LOSS, "stream ended without a result")
        return self.result

    def abort(self) -> None:
        """Close the file; remove it unless it was resuming an existing one."""
        self._close()
        if not self._keep:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.abort()
