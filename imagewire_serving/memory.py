"""Device out-of-memory as a client-facing error: the memory released, the request failed, the engine serving on.

Both engines run their model calls through :func:`releasing_memory`. An out-of-memory error inside a model call
becomes :class:`imagewire_serving.errors.OutOfMemory` (RESOURCE_EXHAUSTED, with the service's hint on what to ask
for instead) after the failed call's tensors are gone and the allocator's cache is emptied, so the next request
finds the memory free. It also says how much memory is free and what a copy of a model's weights takes: whether a
second copy fits (the captioner's small-batch copy, imagewire_serving.app).
"""

from __future__ import annotations

import gc
import logging
import os
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


def free_bytes(device: torch.device) -> int:
    """Memory new tensors on ``device`` can take now: CUDA's free memory plus what torch's caching allocator holds
    unused; on the CPU, the memory the kernel says is available (Linux MemAvailable; else the free pages)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        for line in open("/proc/meminfo", encoding="ascii"):  # noqa: SIM115 - read to the line needed
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def tensor_bytes(module: torch.nn.Module) -> int:
    """The bytes of a module's weights and buffers (each tensor once, however often it is shared)."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def run_bytes(device: torch.device, run: Callable[[], object], allowance: int) -> int:
    """The memory ``run`` takes above what is allocated before it: on CUDA its peak, measured (``run`` is called);
    on the CPU, where torch counts nothing, ``allowance`` (``run`` is not called)."""
    if device.type != "cuda":
        return allowance
    release(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    return int(torch.cuda.max_memory_allocated(device) - before)
