"""The runtime of the typed result classes generated from the protos (``imagewire/*/v1/*_types.py``).

:class:`ProtoData` is the base of the frozen dataclasses: each mirrors one message (``PROTO``) field for field and
is built from a message by :meth:`ProtoData.from_proto` using its own type hints: a nested :class:`ProtoData` for
a message field, a tuple for a repeated field, an :class:`ProtoEnum` for an enum field, ``None`` for an absent
optional field, and plain JSON values for a ``google.protobuf.Value``.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Self

from google.protobuf import json_format
from google.protobuf.message import Message

if TYPE_CHECKING:
    # A message class's descriptors are typed as either implementation's (pure Python or upb).
    from google._upb._message import FieldDescriptor as UpbFieldDescriptor
    from google.protobuf.descriptor import FieldDescriptor

# What a google.protobuf.Value holds, in Python.
JsonValue = str | float | bool | list[Any] | dict[str, Any] | None

_REGISTRY: dict[str, type[ProtoData]] = {}
_VALUE = "google.protobuf.Value"


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
        # A dataclass's __hash__ is None on its instances, not on the class, which mypy does not tell apart.
        return cls(**{name: convert(message) for name, convert in _converters(cls)})  # type: ignore[arg-type]


def registered() -> dict[str, type[ProtoData]]:
    """Every generated class by the full name of the message it mirrors."""
    return dict(_REGISTRY)


def from_message(message: Message) -> ProtoData:
    """``message`` as the dataclass registered for its type (which must exist)."""
    return _REGISTRY[message.DESCRIPTOR.full_name].from_proto(message)


class ProtoEnum(enum.IntEnum):
    """Base of the Python enums mirroring a protobuf enum: member ``X`` is the proto's ``<PREFIX>_X``.

    A number this client does not know (a newer server's) reads as ``UNSPECIFIED``, which every enum has.
    """

    @classmethod
    def _missing_(cls, value: object) -> Self:
        return cls["UNSPECIFIED"]


@functools.cache
def _converters(cls: type[ProtoData]) -> tuple[tuple[str, Callable[[Message], Any]], ...]:
    # Resolved once per class: the hints are strings under `from __future__ import annotations`.
    hints = typing.get_type_hints(cls)
    fields = cls.PROTO.DESCRIPTOR.fields_by_name
    return tuple((name, _field_converter(name, hints[name], _is_json_value(fields[name])))
                 for name in cls.__dataclass_fields__)  # type: ignore[attr-defined] # subclasses are dataclasses


def _is_json_value(field: FieldDescriptor | UpbFieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name == _VALUE


def _field_converter(name: str, hint: Any, json_value: bool) -> Callable[[Message], Any]:
    if json_value:
        return lambda message: (json_format.MessageToDict(getattr(message, name)) if message.HasField(name)
                                else None)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        present = _converter(next(arg for arg in typing.get_args(hint) if arg is not type(None)))
        return lambda message: present(getattr(message, name)) if message.HasField(name) else None
    convert = _converter(hint)
    return lambda message: convert(getattr(message, name))


def _converter(hint: Any) -> Callable[[Any], Any]:
    if typing.get_origin(hint) is tuple:
        item = _converter(typing.get_args(hint)[0])
        return lambda values: tuple(item(value) for value in values)
    if isinstance(hint, type) and issubclass(hint, ProtoData):
        return hint.from_proto
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return hint
    return lambda value: value
