"""The domain exceptions engines raise. Pure Python: mapped to gRPC status codes in one place, status.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One request field that is wrong, and why."""

    field: str
    description: str


class ServingError(Exception):
    """Base of the errors a client can be told about; anything else is an internal error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    """The request is malformed: a bad image, or a field out of range."""

    def __init__(self, message: str, *, field: str | None = None, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        if field is not None:
            violations = (FieldViolation(field, message), *violations)
        self.violations = violations


class NotFound(ServingError):
    """The request names something (a model, a job) the server does not have."""


class FailedPrecondition(ServingError):
    """The request conflicts with the state of what it names (a job id reused with different parameters)."""


class OutOfRange(ServingError):
    """A position in the request lies past the end of what exists (an offset past the bytes produced)."""


class Overloaded(ServingError):
    """The server's queue is full; the client may retry later."""


class OutOfMemory(ServingError):
    """The device ran out of memory for this request; a smaller one may fit (the message says how)."""


class Cancelled(ServingError):
    """The caller went away or cancelled; the work was stopped."""


class DeadlineExceeded(ServingError):
    """The caller's deadline passed before the work finished."""


class Unavailable(ServingError):
    """The server is loading or shutting down."""


# Client-supplied values echoed in error messages are cut to this many characters: an error must never grow with
# the request (a 10,000-character id would overflow the status trailers).
MAX_SHOWN_CHARS = 64


def shown(value: object) -> str:
    """``value`` as it may appear in an error message: quoted, and cut to MAX_SHOWN_CHARS characters."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    # The value's own length, not its repr's (which counts the quotes and the escapes).
    size = f"{len(value)} {'bytes' if isinstance(value, bytes) else 'characters'}" if isinstance(
        value, str | bytes) else f"{len(text)} characters"
    return f"{text[:MAX_SHOWN_CHARS]}... ({size})"


def collect(violations: list[FieldViolation]) -> None:
    """Raise one InvalidArgument naming every violated field, if any."""
    if violations:
        # A description that already names its field ("image is empty") is not prefixed again.
        message = "; ".join(v.description if v.description.startswith(v.field) else f"{v.field}: {v.description}"
                            for v in violations)
        raise InvalidArgument(message, violations=tuple(violations))
