"""How a model treats each request field: its default and its bounds, declared once.

Both the validation of a request and ListModels read the same :class:`RequestField` values, so what a client is
told about a field is exactly what the server enforces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from imagewire_serving.errors import FieldViolation


@dataclass(frozen=True)
class RequestField:
    """One request field as a model treats it. ``default`` None: no default (the server chooses, or it is
    required); for strings and bytes the bounds apply to the length."""

    name: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int = 0
    # With multiple_of: the remainder a value must leave (1 for frame counts of the form 8k + 1).
    remainder: int = 0

    def violation(self, value: Any) -> FieldViolation | None:
        """Why ``value`` is not acceptable for this field, or None."""
        measured = len(value) if isinstance(value, str | bytes) else value
        if isinstance(measured, float) and not math.isfinite(measured):
            return FieldViolation(self.name, f"must be a finite number, not {measured}")
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if not low <= measured <= high:
            unit = " characters" if isinstance(value, str) else " bytes" if isinstance(value, bytes) else ""
            return FieldViolation(self.name, f"must be {_range(self.minimum, self.maximum)}{unit}, not {measured}")
        if self.multiple_of and measured % self.multiple_of != self.remainder:
            form = (f"a multiple of {self.multiple_of}" if not self.remainder
                    else f"of the form {self.multiple_of}k + {self.remainder}")
            return FieldViolation(self.name, f"must be {form}, not {measured}")
        return None


def _range(low: float | None, high: float | None) -> str:
    if low is None:
        return f"at most {high:g}"
    if high is None:
        return f"at least {low:g}"
    return f"{low:g}..{high:g}"


def check_fields(fields: Mapping[str, RequestField], values: Iterable[tuple[str, Any]]) -> list[FieldViolation]:
    """The violations among ``values`` (name, value) of the named fields; values of None are not checked."""
    found = (fields[name].violation(value) for name, value in values if value is not None)
    return [violation for violation in found if violation is not None]


def unused_field(name: str, model_id: str, family: str) -> FieldViolation:
    """A field set on a request that the model does not take: refused, never silently ignored. The model id is the
    server's own (a loaded model's), so it is named whole."""
    return FieldViolation(name, f"{name} is not used by model {model_id!r} ({family}); leave it unset")
