"""Configuration dataclasses that declare their own command-line flags and check their own bounds.

A field made with :func:`option` carries its flag, help text and bounds; :class:`Config` checks the bounds (and a
class's own cross-field rules, :meth:`Config.check`) whenever an instance is built, whether from flags or directly
in code and tests. ``imagewire_serving.settings`` turns the same declarations into flags with environment
fallbacks, so each limit is declared once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_OPTION = "imagewire_option"


@dataclass(frozen=True)
class OptionSpec:
    """How one configuration field appears on the command line and what values it accepts."""

    help: str
    flag: str | None = None  # default: the field name with dashes
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None  # default: the field's type (int, float, str)
    repeatable: bool = False
    boolean: bool = False

    def flag_for(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")

    def check(self, name: str, value: Any) -> None:
        """Raise ValueError naming the flag when ``value`` is out of bounds."""
        flag = self.flag_for(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, not {value}")
        if self.minimum is not None and value is not None and value < self.minimum:
            raise ValueError(f"{flag} must be >= {self.minimum:g}, not {value}")
        if self.maximum is not None and value is not None and value > self.maximum:
            raise ValueError(f"{flag} must be <= {self.maximum:g}, not {value}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{flag} must be one of {', '.join(self.choices)}, not {value!r}")


def option(default: Any, help: str, **spec: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field that is also a command-line flag (see :class:`OptionSpec` for ``spec``)."""
    return dataclasses.field(default=default, metadata={_OPTION: OptionSpec(help, **spec)})


def spec_of(field: dataclasses.Field[Any]) -> OptionSpec | None:
    """The option declaration of a dataclass field, or None for a plain field."""
    spec = field.metadata.get(_OPTION)
    return spec if isinstance(spec, OptionSpec) else None


class Config:
    """Base of frozen configuration dataclasses: every instance is checked when it is built."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type] # subclasses are dataclasses
            spec = spec_of(field)
            if spec is not None:
                spec.check(field.name, getattr(self, field.name))
        self.check()

    def check(self) -> None:
        """Rules between fields; raise ValueError naming the flags. The field bounds are already checked."""
