"""Device out-of-memory as a client-facing error: the memory released, the request failed, the engine serving on.

Both engines run their model calls through :func:`releasing_memory`. An out-of-memory error inside a model call
becomes :class:`imagewire_serving.errors.OutOfMemory` (RESOURCE_EXHAUSTED, with the service's hint on what to ask
for instead) after the failed call's tensors are gone and the allocator's cache is emptied, so the next request
finds the memory free.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

from imagewire_serving import errors

_LOGGER = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def releasing_memory(function: Callable[P, T], device: torch.device, hint: str) -> Callable[P, T]:
    """``function`` with a device out-of-memory error turned into OutOfMemory carrying ``hint``."""

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except torch.OutOfMemoryError as error:
            detail = str(error).splitlines()[0] if str(error) else "out of memory"
        # Outside the except block: the error and its traceback, which hold the failed call's frames and so its
        # tensors, are gone, and the allocator can hand their memory back.
        release(device)
        _LOGGER.warning("out of memory on %s: %s", device, detail)
        raise errors.OutOfMemory(f"the {device.type.upper()} ran out of memory for this request; {hint}")

    return call


def release(device: torch.device) -> None:
    """Return the memory of dead tensors to the device (the CUDA caching allocator keeps it otherwise)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
