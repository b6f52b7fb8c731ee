"""A diffusers pipeline loaded with every weight checked, then placed on its device.

``DiffusionPipeline.from_pretrained`` loads each component through the component's own ``from_pretrained`` and
keeps no loading report, so a component whose weights do not fit its class (another family's checkpoint under
the same name, a truncated file) would come up with random weights. Here every torch component named in
``model_index.json`` is loaded first through :func:`imagewire_serving.weights.load_checked`; the pipeline is then
assembled from those components by its own ``from_pretrained``, which loads the rest (tokenizers, schedulers,
processors) as usual.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import torch

from imagewire_serving.device import dtype_name
from imagewire_serving.weights import WeightMismatch, load_checked

_LOGGER = logging.getLogger(__name__)


def model_index(source: str) -> dict[str, Any]:
    """A pipeline's ``model_index.json`` (its class and components), from a directory or a hub id."""
    from diffusers import DiffusionPipeline

    return dict(DiffusionPipeline.load_config(source))


def load_pipeline(pipeline_type: Any, source: str, dtype: torch.dtype, *, float32: tuple[str, ...] = ()) -> Any:
    """``pipeline_type`` from ``source`` in ``dtype`` (the components named in ``float32`` in float32), its torch
    components checked against their weights; the fp16 weights variant where a component has one."""
    components: dict[str, Any] = {}
    for name, entry in model_index(source).items():
        model_class = _torch_class(entry)
        if model_class is not None:
            components[name] = _load_component(model_class, source, name, torch.float32 if name in float32 else dtype)
    return pipeline_type.from_pretrained(source, dtype=dtype, **components)


def _torch_class(entry: object) -> type[torch.nn.Module] | None:
    """The class of a model_index entry ([library, class name]) when it is a torch module, else None."""
    if not isinstance(entry, list | tuple) or len(entry) != 2 or entry[0] is None:
        return None
    library, class_name = entry
    try:
        module = importlib.import_module(library)
    except ImportError:  # a diffusers pipeline module, such as "stable_diffusion"
        module = importlib.import_module(f"diffusers.pipelines.{library}")
    found = getattr(module, class_name, None)
    return found if isinstance(found, type) and issubclass(found, torch.nn.Module) else None


def _load_component(model_class: type[Any], source: str, name: str, dtype: torch.dtype) -> Any:
    what = f"its {name} ({model_class.__name__})"
    if dtype == torch.float16:
        try:
            return load_checked(model_class, source, what=what, subfolder=name, dtype=dtype, variant="fp16")
        except WeightMismatch:
            raise
        except (OSError, ValueError):  # no fp16 files: load the full weights and cast them
            _LOGGER.info("%s has no fp16 variant of %s; casting its weights", source, name)
    return load_checked(model_class, source, what=what, subfolder=name, dtype=dtype)


def place(pipeline: Any, source: str, device: torch.device, dtype: torch.dtype, *, cpu_offload: bool) -> None:
    """Move the pipeline to ``device``, or with ``cpu_offload`` on CUDA keep each component on the CPU until it
    runs (diffusers' model CPU offload: a large model then fits a smaller card, at the cost of transfers)."""
    if cpu_offload and device.type == "cuda":
        pipeline.enable_model_cpu_offload(gpu_id=device.index or 0)
    else:
        if cpu_offload:
            _LOGGER.warning("--cpu-offload applies to CUDA devices; ignored on %s", device)
        pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    _LOGGER.info("loaded video model %s (%s) on %s (%s%s)", source, type(pipeline).__name__, device,
                 dtype_name(dtype), ", cpu offload" if cpu_offload else "")
