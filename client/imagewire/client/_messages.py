"""Protobuf messages <-> plain Python, driven by the message descriptors so that nothing lists a field twice.

:class:`ProtoData` is the base of the frozen dataclasses the clients return: each names the message it mirrors
(``PROTO``), has exactly that message's fields (a test checks), and is built from a message by
:meth:`ProtoData.from_proto` using its own type hints: a nested :class:`ProtoData` for a message field, a tuple
for a repeated field, an :class:`enum.IntEnum` for an enum field.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

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

_REGISTRY: dict[str, type[ProtoData]] = {}


class ProtoData:
    """Base of the frozen dataclasses mirroring one protobuf message each, field for field."""

    PROTO: ClassVar[type[Message]]

    # Registers the class itself: subclasses must use @dataclass without slots=True, which would make a copy.
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.PROTO.DESCRIPTOR.full_name] = cls

    @classmethod
    def from_proto(cls, message: Message) -> Self:
        """The dataclass holding ``message``'s values."""
        return cls(**{name: convert(getattr(message, name)) for name, convert in _converters(cls)})


def from_message(message: Message) -> ProtoData:
    """``message`` as the dataclass registered for its type (which must exist)."""
    return _REGISTRY[message.DESCRIPTOR.full_name].from_proto(message)


@functools.cache
def _converters(cls: type[ProtoData]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    # Resolved once per class: the hints are strings under `from __future__ import annotations`.
    hints = typing.get_type_hints(cls)
    return tuple((field.name, _converter(hints[field.name])) for field in dataclasses.fields(cls))  # type: ignore[arg-type]


def _converter(hint: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = _converter(typing.get_args(hint)[0])
        return lambda values: tuple(item(value) for value in values)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"ProtoData fields are never optional: {hint}")
    if isinstance(hint, type) and issubclass(hint, ProtoData):
        return hint.from_proto
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return hint
    return lambda value: value


class ProtoEnum(enum.IntEnum):
    """Base of the Python enums mirroring a protobuf enum: member ``X`` is the proto's ``<PREFIX>_X``.

    A number this client does not know (a newer server's) reads as ``UNSPECIFIED``, which every enum has.
    """

    @classmethod
    def _missing_(cls, value: object) -> Self:
        return cls["UNSPECIFIED"]


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

