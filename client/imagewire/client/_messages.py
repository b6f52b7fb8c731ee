"""Descriptor-driven helpers of the client cores and the CLI: which fields a request has, their Python types,
and building a request from keyword arguments, checked before it is sent, so that nothing lists a field twice.
The typed results are generated from the protos (``imagewire/*/v1/*_types.py``, on the runtime in
``imagewire._protodata``).
"""


from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from imagewire.client.errors import FieldViolation, ImagewireError
from imagewire.limits import JOB_ID_RULE, MAX_IMAGE_BYTES, is_job_id

MessageT = TypeVar("MessageT", bound=Message)

# The Python type of a scalar field, by its C++ type (what protobuf itself accepts when setting the field).
_SCALAR_TYPES: dict[int, type] = {
    FieldDescriptor.CPPTYPE_INT32: int,
    FieldDescriptor.CPPTYPE_INT64: int,
    FieldDescriptor.CPPTYPE_UINT32: int,
    FieldDescriptor.CPPTYPE_UINT64: int,
    FieldDescriptor.CPPTYPE_FLOAT: float,
    FieldDescriptor.CPPTYPE_DOUBLE: float,
    FieldDescriptor.CPPTYPE_BOOL: bool,
    FieldDescriptor.CPPTYPE_STRING: str,  # also bytes fields; their type is told apart below
    FieldDescriptor.CPPTYPE_ENUM: int,
}

# What the wire type of an integer field can carry: protobuf itself raises a bare "Value out of range" otherwise.
_INTEGER_RANGES: dict[int, tuple[str, int, int]] = {
    FieldDescriptor.CPPTYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: ("uint32", 0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: ("uint64", 0, 2**64 - 1),
    FieldDescriptor.CPPTYPE_ENUM: ("enum", -(2**31), 2**31 - 1),
}
# The largest finite float32: protobuf silently stores a larger value as infinity.
_FLOAT32_MAX = 3.4028234663852886e38
# The contract's bounds on bytes fields, by field name (imagewire.limits; the protos' comments state them). Every
# other bound is the model's (ListModels) and the server's to check.
_MAX_BYTES = {"image": MAX_IMAGE_BYTES}


def enum_members(descriptor: EnumDescriptor) -> dict[str, int]:
    """The enum's values by name without the style guide's ``ENUM_NAME_`` prefix (``STAGE_QUEUED`` -> ``QUEUED``)."""
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in descriptor.name).lstrip("_") + "_"
    return {value.name.removeprefix(prefix): value.number for value in descriptor.values}


def optional_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The scalar fields with presence (``optional`` in proto3): absent means the server's default."""
    return tuple(
        field for field in descriptor.fields
        if field.has_presence and field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE
    )


def python_type(field: FieldDescriptor) -> type:
    """The Python type a scalar field takes (an enum field takes its number)."""
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes
    return _SCALAR_TYPES[field.cpp_type]


def build_message(message_type: type[MessageT], **fields: object) -> MessageT:
    """A message with the given fields set; None leaves a field unset (absent where it has presence).

    Each value is checked against what its field can carry (the sign and range of its wire type, the contract's
    50 MiB image limit) before anything is sent: violations raise :class:`ImagewireError` INVALID_ARGUMENT with
    a field violation naming each field, as the server's own answer would. An unknown field name, or a value of
    the wrong Python type, raises TypeError naming the field.
    """
    # Message.DESCRIPTOR is typed as either protobuf implementation's; both have the python API's interface.
    descriptor = cast(Descriptor, message_type.DESCRIPTOR)
    unknown = sorted(set(fields) - set(descriptor.fields_by_name))
    if unknown:
        raise TypeError(f"{descriptor.name} has no field {', '.join(unknown)}")
    present = {name: value for name, value in fields.items() if value is not None}
    found = (field_violation(descriptor.fields_by_name[name], value) for name, value in present.items())
    violations = tuple(violation for violation in found if violation is not None)
    if violations:
        raise ImagewireError.invalid_argument(violations)
    return message_type(**present)


def field_violation(field: FieldDescriptor, value: object) -> FieldViolation | None:
    """Why ``value`` cannot be sent in the scalar ``field``, or None; TypeError for a value of the wrong type."""
    kind = python_type(field)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # protobuf takes an int for a float field
    if field.type == FieldDescriptor.TYPE_BYTES and isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        owner = f"{field.containing_type.name}." if field.containing_type is not None else ""
        raise TypeError(f"{owner}{field.name} takes {kind.__name__}, not {type(value).__name__}")
    limits = _INTEGER_RANGES.get(field.cpp_type)
    if limits is not None:
        name, low, high = limits
        if not low <= value <= high:  # type: ignore[operator] # an int, checked above
            return FieldViolation(field.name, f"must be {low}..{high} ({name}), not {value}")
    too_large = isinstance(value, float) and math.isfinite(value) and abs(value) > _FLOAT32_MAX
    if field.cpp_type == FieldDescriptor.CPPTYPE_FLOAT and too_large:
        return FieldViolation(field.name, f"must be within the float range (±{_FLOAT32_MAX:.7g}), not {value:g}")
    if isinstance(value, str) and not _is_utf8(value):
        return FieldViolation(field.name, "must be valid Unicode text (it holds unpaired surrogates)")
    limit = _MAX_BYTES.get(field.name)
    if isinstance(value, bytes) and limit is not None and len(value) > limit:
        return FieldViolation(field.name, f"{field.name} is {len(value)} bytes; the limit is {limit} "
                                          f"({limit / 2**20:g} MiB)")
    if field.name == "job_id" and value and not is_job_id(value):  # type: ignore[arg-type] # a str, checked above
        return job_id_violation(value)  # type: ignore[arg-type]
    return None


def job_id_violation(job_id: str) -> FieldViolation:
    """The violation of a job id that breaks the contract's rule (it travels in metadata, where gRPC itself would
    refuse a non-ASCII or control character with INTERNAL), in the words of the server's."""
    return FieldViolation("job_id", f"job_id must be {JOB_ID_RULE}, not {shown(job_id)}")


def shown(text: str, most: int = 64) -> str:
    """``text`` quoted for a message, cut to ``most`` characters (its own length then given)."""
    quoted = repr(text)
    return quoted if len(quoted) <= most else f"{quoted[:most]}... ({len(text)} characters)"


# gRPC's rule for metadata: keys of lower-case letters, digits, '-', '_' and '.'; values (but those of keys
# ending -bin, which carry bytes) printable ASCII. gRPC itself refuses others with INTERNAL.
_KEY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def metadata_violations(pairs: Sequence[tuple[str, str | bytes]]) -> tuple[FieldViolation, ...]:
    """Why each metadata pair could not be sent (key and value), as field violations named by the key."""
    violations = []
    for key, value in pairs:
        if not key or not set(key) <= _KEY_CHARACTERS:
            violations.append(FieldViolation(
                "metadata", f"key {shown(key)} must be lower-case letters, digits, '-', '_' and '.'"))
        elif key.endswith("-bin"):
            if not isinstance(value, bytes):
                violations.append(FieldViolation(key, "a key ending -bin carries bytes"))
        elif not isinstance(value, str) or not all(" " <= c <= "~" for c in value):
            violations.append(FieldViolation(key, f"must be printable ASCII text, not {shown(str(value))}"))
    return tuple(violations)



def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
