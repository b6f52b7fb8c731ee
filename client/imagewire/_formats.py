"""The ``imagewire`` command's video formats: ``--format``'s choices, read from the VideoFormat enum, and the
format an output file's extension asks for."""

from __future__ import annotations

import collections
from pathlib import Path

from imagewire.animate.v1 import animate_pb2
from imagewire.client import AnimateEvent, VideoHeader
from imagewire.client._messages import enum_members
from imagewire.client.animate_clients import EventCallback


class UsageError(Exception):
    """A command line that cannot be right, found before anything is sent (exit status 2, as argparse's)."""


def video_formats() -> dict[str, int]:
    """``--format``'s choices, read from the VideoFormat enum: each format by its lower-case name (``mp4_h264``)
    and, where no other format shares it, by its container alone (``mp4``)."""
    formats = {name.lower(): number for name, number in enum_members(animate_pb2.VideoFormat.DESCRIPTOR).items()
               if number}  # 0 is UNSPECIFIED: leaving --format out asks for it
    containers = collections.Counter(_container(name) for name in formats)
    aliases = {_container(name): number for name, number in formats.items() if containers[_container(name)] == 1}
    return {**formats, **aliases}


def _container(name: str) -> str:
    return name.split("_")[0]


def _containers(formats: dict[str, int]) -> set[str]:
    """The containers the formats write (``mp4``, ``webm``): the extensions a file may have."""
    return {_container(name) for name in formats}


def output_format(output: Path, explicit: str | None) -> int:
    """The VideoFormat to ask for when writing ``output``: ``explicit`` (a ``--format`` choice) when given, which
    must agree with the file's extension if that names a container; else the one format of the container the
    extension names (``.mp4``, ``.webm``). UsageError otherwise, naming the choices."""
    formats = video_formats()
    containers = sorted(_containers(formats))
    extension = output.suffix.lower().removeprefix(".")
    if explicit is not None:
        if extension in containers and _container(explicit) != extension:
            raise UsageError(f"--format {explicit} writes {_container(explicit).upper()}, but {output} ends in "
                             f".{extension}: change one of them")
        return formats[explicit]
    if extension not in containers:
        raise UsageError(f"cannot tell the video format from {output}'s extension: name the file "
                         f"{' or '.join('.' + c for c in containers)}, or give --format "
                         f"({', '.join(sorted(formats))})")
    if extension not in formats:  # a container with several codecs: the extension alone does not say which
        codecs = sorted(name for name in formats if _container(name) == extension and name != extension)
        raise UsageError(f"{output}: .{extension} holds several codecs: give --format ({', '.join(codecs)})")
    return formats[extension]


def matching_container(output: Path, then: EventCallback | None) -> EventCallback:
    """An event callback that passes every event on to ``then`` and, when the stream's header arrives (before any
    byte of video), raises UsageError if ``output``'s extension names another container than the job writes: a
    watched job's format is the one it was started with, whatever the file is called."""
    extension = output.suffix.lower().removeprefix(".")
    containers = _containers(video_formats())

    def check(event: AnimateEvent) -> None:
        if isinstance(event, VideoHeader) and extension in containers and event.container != extension:
            raise UsageError(f"the job writes {event.container.upper()} ({event.mime_type}), but {output} ends in "
                             f".{extension}: name the file .{event.container}")
        if then is not None:
            then(event)

    return check
