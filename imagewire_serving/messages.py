"""Engine values as protobuf messages, where both servicers encode them alike (the message types are theirs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from google.protobuf import json_format, struct_pb2

from imagewire_serving.engine import ModelCard
from imagewire_serving.fields import RequestField

R = TypeVar("R")


class _Describes(Protocol):
    default_model_id: str

    def describe(self) -> list[Any]: ...


def model_list(engine: _Describes, response_type: Callable[..., R], info_type: Any) -> R:
    """A ListModelsResponse of the engine's model cards, whose fields are named as the ModelInfo message's."""
    cards: list[ModelCard] = engine.describe()
    return response_type(default_model_id=engine.default_model_id, models=[_info(card, info_type) for card in cards])


def _info(card: ModelCard, info_type: Any) -> Any:
    values = {item.name: _plain(getattr(card, item.name)) for item in dataclasses.fields(card)}
    values["fields"] = [_field_info(field) for field in card.fields]
    values["provenance"] = card.provenance.fields()
    return info_type(**values)


def _plain(value: Any) -> Any:
    """A tuple of dataclasses (a repeated message field, such as the captioner's batch ranges) as dicts."""
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return [dataclasses.asdict(item) for item in value]
    return value


def _field_info(field: RequestField) -> dict[str, Any]:
    info: dict[str, Any] = {"name": field.name, "multiple_of": field.multiple_of}
    if field.default is not None:
        info["default_value"] = json_format.ParseDict(field.default, struct_pb2.Value())
    if field.minimum is not None:
        info["minimum"] = field.minimum
    if field.maximum is not None:
        info["maximum"] = field.maximum
    if field.remainder:  # only the animator's FieldInfo has it
        info["remainder"] = field.remainder
    return info
