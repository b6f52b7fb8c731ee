"""Descriptor-driven helpers of the client cores and the CLI: which fields a request has, their Python types,
and building a request from keyword arguments, so that nothing lists a field twice. The typed results are
generated from the protos (``imagewire/*/v1/*_types.py``, on the runtime in ``imagewire._protodata``).
"""


from __future__ import annotations

from typing import TypeVar

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

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

    An unknown field name raises TypeError; protobuf rejects a value of the wrong type or range.
    """
    unknown = sorted(set(fields) - set(message_type.DESCRIPTOR.fields_by_name))
    if unknown:
        raise TypeError(f"{message_type.DESCRIPTOR.name} has no field {', '.join(unknown)}")
    return message_type(**{name: value for name, value in fields.items() if value is not None})

