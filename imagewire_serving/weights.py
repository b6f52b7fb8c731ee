"""Loading a model component so that weights which do not fit its class are an error, not a log line.

transformers and diffusers both load a checkpoint whose weights do not match the class (another family's
checkpoint, a truncated file, renamed keys): the parameters they find no weights for are initialised at random,
and all they do is log it. A server would then start, report SERVING and answer with noise. Both libraries can
return their loading report (``output_loading_info=True``), which already leaves out what they know to be fine
(tied weights, keys a class declares ignorable); :func:`load_checked` turns anything left in it into a
ValueError naming the component and the keys.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# Keys named in an error message; the count says how many more there were.
SHOWN_KEYS = 5


class WeightMismatch(ValueError):
    """A checkpoint's weights do not fit the class loading them."""


def load_checked(model_class: Any, source: str, *, what: str, **kwargs: Any) -> Any:
    """``model_class.from_pretrained(source, **kwargs)``, raising WeightMismatch when the loading report names
    missing, unexpected or mis-shaped weights, or errors. ``what`` names the component in the message."""
    with _report_not_logged(model_class.__module__.split(".")[0]):
        model, report = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    check_report(report, what)
    return model


@contextlib.contextmanager
def _report_not_logged(library: str) -> Iterator[None]:
    """The library's own log of the report, silenced while it loads: its warnings are this module's error, said
    once in one line, and a report with nothing in it is nothing to say."""
    logger = logging.getLogger(library)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_report(report: Mapping[str, Any], what: str) -> None:
    """Raise WeightMismatch if a transformers or diffusers loading report shows weights that do not fit."""
    problems = [
        _listed("missing (they would be random)", report.get("missing_keys", ())),
        _listed("unexpected (the checkpoint has them, the class does not)", report.get("unexpected_keys", ())),
        _listed("of the wrong shape", [str(key[0]) if isinstance(key, tuple) else str(key)
                                       for key in report.get("mismatched_keys", ())]),
        _listed("failing to load", report.get("error_msgs", ())),
    ]
    found = [problem for problem in problems if problem]
    if found:
        raise WeightMismatch(f"{what}: the weights do not fit the class: {'; '.join(found)}")


def _listed(kind: str, keys: Iterable[str]) -> str:
    keys = sorted(str(key) for key in keys)
    if not keys:
        return ""
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{len(keys)} {kind}: {', '.join(keys[:SHOWN_KEYS])}{more}"
