"""The one exception type the clients raise, carrying the gRPC status and any field violations."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """A request field the server rejected, and why."""

    field: str
    description: str


class ImagewireError(Exception):
    """A failed call: ``code`` is the gRPC status code, ``message`` the server's explanation.

    ``field_violations`` lists the offending request fields when the server sent google.rpc.BadRequest
    details (decoded when the optional ``grpcio-status`` package is installed).

    A stream that failed after answering says how much had arrived: ``responses_received`` and
    ``bytes_received`` (of video). gRPC retries an attempt only until its first response, so such a failure is
    never retried; the caller may start the call again.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: tuple[FieldViolation, ...] = (),
        request_id: str | None = None,
        *,
        responses_received: int = 0,
        bytes_received: int = 0,
    ) -> None:
        partial = (f" (after {responses_received} responses and {bytes_received} video bytes had arrived: a call "
                   "is not retried once it has answered)") if responses_received else ""
        super().__init__(f"{code.name}: {message}{partial}")
        self.code = code
        self.message = message
        self.field_violations = field_violations
        self.request_id = request_id
        self.responses_received = responses_received
        self.bytes_received = bytes_received

    @classmethod
    def invalid_argument(cls, violations: tuple[FieldViolation, ...]) -> ImagewireError:
        """A request refused before it was sent, in the shape of the server's INVALID_ARGUMENT: a message joining
        the violations (each prefixed by its field unless it names it first) and the violations themselves."""
        message = "; ".join(v.description if v.description.startswith(v.field) else f"{v.field}: {v.description}"
                            for v in violations)
        return cls(grpc.StatusCode.INVALID_ARGUMENT, message, violations)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, request_id: str | None = None, *, responses_received: int = 0,
                       bytes_received: int = 0) -> ImagewireError:
        """Build from a grpc.RpcError (sync) or grpc.aio.AioRpcError."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", _field_violations(error), request_id,
                   responses_received=responses_received, bytes_received=bytes_received)


def _field_violations(error: grpc.RpcError) -> tuple[FieldViolation, ...]:
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status
    except ImportError:  # the optional rich-errors extra is not installed
        return ()
    try:
        # The stubs want a grpc.Call; the RpcError a failed call raises is also its Call.
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return ()
    if status is None:
        return ()
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    return tuple(violations)
