"""The video model families, each a :class:`~animator.families.base.PipelineBackend` in its own module, chosen
for a checkpoint by the pipeline class its ``model_index.json`` names.

Adding a family is adding a module here (it registers itself by subclassing) and a test; nothing else names a
model class.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from animator.backend import VideoBackend
from animator.families.base import REGISTRY, PipelineBackend
from animator.families.loading import model_index

# Import every family module: each registers the pipeline class it serves.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def family_for(source: str) -> type[PipelineBackend]:
    """The family serving the checkpoint at ``source`` (a directory or a hub id), or a ValueError saying which
    pipeline classes this server serves."""
    try:
        name = model_index(source).get("_class_name")
    except (OSError, ValueError) as error:
        raise ValueError(f"it has no readable model_index.json (a diffusers pipeline's): {error}") from error
    family = REGISTRY.get(str(name))
    if family is None:
        served = ", ".join(f"{pipeline} ({backend.family})" for pipeline, backend in sorted(REGISTRY.items()))
        raise ValueError(f"its pipeline is {name!r}; this server serves {served}")
    return family


def load(model_id: str, source: str, device: torch.device, dtype: torch.dtype, *,
         cpu_offload: bool = False, dtype_chosen: bool = True) -> VideoBackend:
    """Load a video model with its family's backend (see :meth:`PipelineBackend.load`)."""
    backend: VideoBackend = family_for(source).load(source, device, dtype, model_id=model_id,
                                                    cpu_offload=cpu_offload, dtype_chosen=dtype_chosen)
    return backend
