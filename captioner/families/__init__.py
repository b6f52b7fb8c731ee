"""Caption model families: one module per family, each exporting ``FAMILY`` (a :class:`~.base.Captioner`).

:func:`load_captioner` reads a checkpoint's config, picks the family serving its ``model_type``, and loads the
model through ``AutoModelForImageTextToText`` and ``AutoProcessor``; a checkpoint no family serves, or whose
weights do not fit the model class, is a ValueError naming what is wrong. Adding a family is adding a module.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import pkgutil
from collections.abc import Iterator
from typing import Any, cast

import torch

from captioner.families.base import Captioner
from imagewire_serving.device import dtype_name
from imagewire_serving.provenance import model_files
from imagewire_serving.weights import check_report

_LOGGER = logging.getLogger(__name__)

@functools.cache
def families() -> dict[str, type[Captioner]]:
    """Each served config ``model_type`` and the family class serving it, from the modules of this package."""
    served: dict[str, type[Captioner]] = {}
    for module in pkgutil.iter_modules(__path__):
        family = getattr(importlib.import_module(f"{__name__}.{module.name}"), "FAMILY", None)
        for model_type in getattr(family, "model_types", ()):
            # A module's FAMILY is a Captioner subclass (read with getattr, so mypy sees object).
            served[model_type] = family  # type: ignore[assignment]
    return served


def family_of(model_type: str) -> type[Captioner]:
    """The family serving a config's ``model_type``, or a ValueError listing those served."""
    family = families().get(model_type)
    if family is None:
        raise ValueError(f"it is a {model_type!r} model; the caption families served are "
                         f"{', '.join(sorted(families()))} (docs/models.md)")
    return family


def load_captioner(source: str, device: torch.device, dtype: torch.dtype, *, model_id: str | None = None
                   ) -> Captioner:
    """Load a checkpoint (a local directory or a hub id) as the family its config names."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    with _transformers_quiet():
        family = family_of(AutoConfig.from_pretrained(source).model_type)
        # Weights of the wrong shape are loaded as missing ones are (left random) and reported, not raised on with
        # a pointer to the report: the check below names them.
        # output_loading_info=True makes it a (model, report) pair, which transformers' annotation leaves out.
        model, report = cast(tuple[Any, dict[str, Any]], AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True))
        check_report(report, f"its model ({type(model).__name__})")
        processor = AutoProcessor.from_pretrained(source)
    captioner = family(model_id or source, model.to(device).eval(), processor, device, model_files(source))
    _LOGGER.info("loaded %s model %s on %s (%s)", family.family, source, device, dtype_name(dtype))
    return captioner


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """transformers' own loading report (a table of every unmatched weight) and notes go to stderr; the load
    raises one error naming what is wrong instead, so a failed start stays one line."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
