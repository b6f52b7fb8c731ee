"""Device and dtype choice: CUDA with fp16 when present, the CPU with fp32 otherwise."""

from __future__ import annotations

import torch


def resolve_device(spec: str) -> torch.device:
    """Turn auto/cpu/cuda/cuda:N (already checked by the settings) into a torch.device, checking the GPU exists."""
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        device = torch.device("cuda", index)
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (the production path), fp32 on the CPU (fp16 matmuls there are slow or missing)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
