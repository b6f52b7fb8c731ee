"""The one place where domain errors become gRPC statuses (with google.rpc rich details)."""

from __future__ import annotations

import collections

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagewire_serving import errors

_CODES: dict[type[errors.ServingError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfMemory: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

INTERNAL_MESSAGE = "internal error; the server logged the details"


def code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception; anything that is not a ServingError is INTERNAL."""
    for kind in type(error).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def to_status(error: BaseException, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.Status:
    """A grpc.Status carrying a google.rpc.Status, with BadRequest field violations when there are any, and
    ``metadata`` added to its trailers."""
    code = code_of(error)
    message = error.message if isinstance(error, errors.ServingError) else INTERNAL_MESSAGE
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(error, errors.InvalidArgument) and error.violations:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        status.details.append(detail)
    packed = rpc_status.to_status(status)
    return _Status(packed.code, packed.details, (*packed.trailing_metadata, *metadata))
