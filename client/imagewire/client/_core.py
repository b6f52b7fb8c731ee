"""What every service core shares, free of I/O: deadlines, call metadata, request ids, the prepared call.

A service core turns a method's arguments into a :class:`PreparedCall` (the request message, the
:class:`CallOptions` and how to decode a response); the blocking and asyncio shells only send it.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypedDict, TypeVar

import grpc
from google.protobuf.message import Message

from imagewire.client._channel import DEFAULT_MAX_ATTEMPTS, Balancing
from imagewire.client._messages import metadata_violations
from imagewire.client.errors import FieldViolation, ImagewireError
from imagewire.limits import MAX_IMAGE_BYTES

REQUEST_ID_KEY = "x-request-id"
# A control call (ListModels) answers at once; its default deadline never exceeds this.
CONTROL_TIMEOUT_S = 30.0

Metadata = tuple[tuple[str, str], ...]
ImageInput = bytes | bytearray | memoryview | str | Path
ResultT = TypeVar("ResultT")


class CallArgs(TypedDict, total=False):
    """The options every client method takes."""

    #: The call's deadline in seconds; None (or absent) takes the client's default.
    timeout: float | None
    #: Sent as ``x-request-id`` and carried by any :class:`ImagewireError`; None generates one.
    request_id: str | None


def check_timeout(timeout: float) -> float:
    """``timeout`` if it is a positive finite number of seconds, else ValueError."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive finite number of seconds, got {timeout!r}")
    return float(timeout)


def image_bytes(image: ImageInput) -> bytes:
    """Accept encoded image bytes or a path to an image file ("-": standard input). A file is read up to the
    contract's limit and one byte more, never whole: one past the limit (``/dev/zero``, a video named .png) is
    refused as INVALID_ARGUMENT naming ``image`` before it can fill the memory."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if str(image) == "-":
        data = sys.stdin.buffer.read(MAX_IMAGE_BYTES + 1)
    else:
        with Path(image).open("rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImagewireError.invalid_argument((FieldViolation(
            "image", f"image {image} is over {MAX_IMAGE_BYTES} bytes; the limit is {MAX_IMAGE_BYTES} "
                     f"({MAX_IMAGE_BYTES / 2**20:g} MiB)"),))
    return data


@dataclass
class Received:
    """What a stream has delivered so far: its failure after the first response says so (see ImagewireError)."""

    responses: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class CallOptions:
    """Everything a call sends besides its request."""

    metadata: Metadata
    timeout: float
    request_id: str

    @contextmanager
    def raising(self, received: Received | None = None) -> Iterator[None]:
        """Turn a failed RPC into :class:`ImagewireError` carrying this call's request id (and, for a stream,
        what it had ``received``)."""
        try:
            yield
        except grpc.RpcError as error:
            got = received or Received()
            raise ImagewireError.from_rpc_error(error, self.request_id, responses_received=got.responses,
                                                bytes_received=got.bytes) from None


@dataclass(frozen=True)
class PreparedCall(Generic[ResultT]):
    """One call ready to send: the request, its options, and how each response message becomes a result."""

    request: Message
    options: CallOptions
    decode: Callable[[Any], ResultT]
    # The payload bytes a decoded result carries (video chunks), counted into Received.
    payload: Callable[[ResultT], int] | None = None

    def count(self, received: Received, result: ResultT) -> ResultT:
        """Count one decoded stream result into ``received``; returns it."""
        received.responses += 1
        if self.payload is not None:
            received.bytes += self.payload(result)
        return result

    def start(self, method: Callable[..., Any]) -> Any:
        """Invoke a stub method (blocking or asyncio) with the request and options."""
        return method(self.request, timeout=self.options.timeout, metadata=self.options.metadata)


class ServiceCore:
    """A client's settings and what every call derives from them.

    ``timeout`` is the default deadline of the service's main call (``DEFAULT_TIMEOUT`` when None);
    ``control_timeout`` that of the control calls such as ListModels (when None, the shorter of ``timeout``
    and 30 s). Both must be positive finite numbers of seconds. ``max_attempts`` (1 to 5) bounds the attempts
    of each call, retries included; 1 turns retries off. ``health_check`` False stops the client's own health
    checks of the replicas (for a proxy target). See :func:`imagewire.client.service_config`.
    """

    DEFAULT_TIMEOUT = 30.0
    #: The service's full name: the channel's health checks and retry policy name it.
    SERVICE: ClassVar[str]

    def __init__(
        self,
        *,
        timeout: float | None = None,
        control_timeout: float | None = None,
        auth_token: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        health_check: bool = True,
    ) -> None:
        self.balancing = Balancing(self.SERVICE, max_attempts, health_check)
        self.timeout = self.DEFAULT_TIMEOUT if timeout is None else check_timeout(timeout)
        self.control_timeout = (
            min(self.timeout, CONTROL_TIMEOUT_S) if control_timeout is None else check_timeout(control_timeout)
        )
        self._auth_token = auth_token
        self._extra_metadata = tuple(metadata)

    def options(self, timeout: float | None, request_id: str | None, *, control: bool = False,
                metadata: Metadata = ()) -> CallOptions:
        """The options of one call: its deadline (None: the default), metadata (the client's, then ``metadata``)
        and request id."""
        if timeout is None:
            timeout = self.control_timeout if control else self.timeout
        request_id = request_id or uuid.uuid4().hex
        pairs = self.metadata(request_id) + tuple(metadata)
        violations = metadata_violations(pairs)
        if violations:  # gRPC would refuse them, as INTERNAL, once the call had started
            raise ImagewireError.invalid_argument(violations)
        return CallOptions(pairs, check_timeout(timeout), request_id)

    def metadata(self, request_id: str) -> Metadata:
        """Per-call metadata: the request id, the bearer token and the client's extra pairs."""
        pairs: list[tuple[str, str]] = [(REQUEST_ID_KEY, request_id)]
        if self._auth_token:
            pairs.append(("authorization", f"Bearer {self._auth_token}"))
        pairs.extend(self._extra_metadata)
        return tuple(pairs)

    def prepare(
        self,
        request: Message,
        decode: Callable[[Any], ResultT],
        timeout: float | None,
        request_id: str | None,
        *,
        control: bool = False,
        metadata: Metadata = (),
        payload: Callable[[ResultT], int] | None = None,
    ) -> PreparedCall[ResultT]:
        """A call of ``request``: the options are built (and the deadline checked) before anything is sent."""
        return PreparedCall(request, self.options(timeout, request_id, control=control, metadata=metadata), decode,
                            payload)
