"""Engine values as protobuf messages, where both servicers encode them alike (the message types are theirs)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from imagewire_serving.engine import ModelCard


class _Describes(Protocol):
    default_model_id: str

    def describe(self) -> list[Any]: ...


def model_list(engine: _Describes, response_type: Any, info_type: Any) -> Any:
    """A ListModelsResponse of the engine's model cards, whose fields are named as the ModelInfo message's."""
    cards: list[ModelCard] = engine.describe()
    return response_type(default_model_id=engine.default_model_id,
                         models=[info_type(**dataclasses.asdict(card)) for card in cards])
