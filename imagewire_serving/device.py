"""Device and dtype choice: which device a server runs on, and which dtypes its models may load in.

``--dtype auto`` means float16 on CUDA. On the CPU it means float32 unless the CPU does bfloat16 (AVX512-BF16 or
AMX) or float16 (AMX-FP16) arithmetic in hardware; then each model is timed in every such dtype at start-up and
loaded in the fastest (:class:`DtypeChoice` lists the candidates, the App times them). A CPU without those
instructions runs bfloat16 and float16 through conversions, several times slower than float32 (7x measured on an
AVX2 EPYC), so they are never candidates there, though an operator may still ask for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from imagewire_serving.settings import DTYPE_NAMES

_LOGGER = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES if name != "auto"}


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


@dataclass(frozen=True)
class DtypeChoice:
    """The dtypes a model may load in (more than one: time each and keep the fastest), and why."""

    candidates: tuple[torch.dtype, ...]
    reason: str

    @property
    def timed(self) -> bool:
        return len(self.candidates) > 1


@dataclass(frozen=True)
class Capabilities:
    """What the hardware computes natively: the CPU's low-precision instructions, and bfloat16 on CUDA."""

    avx512_bf16: bool = False
    amx_bf16: bool = False
    amx_fp16: bool = False
    cuda_bf16: bool = False

    @classmethod
    def detect(cls, device: torch.device) -> Capabilities:
        """This machine's capabilities (``cuda_bf16`` for ``device`` when it is a CUDA device)."""
        cpu = torch.cpu
        return cls(
            avx512_bf16=bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()),
            amx_bf16=bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()),
            amx_fp16=bool(getattr(cpu, "_is_amx_fp16_supported", lambda: False)()),
            cuda_bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False),
        )

    def cpu_dtypes(self) -> tuple[torch.dtype, ...]:
        """The low-precision dtypes the CPU computes in hardware (none: it would only convert to float32)."""
        native: list[torch.dtype] = []
        if self.avx512_bf16 or self.amx_bf16:
            native.append(torch.bfloat16)
        if self.amx_fp16:
            native.append(torch.float16)
        return tuple(native)

    def cpu_description(self) -> str:
        names = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_fp16": "AMX-FP16"}
        found = [label for name, label in names.items() if getattr(self, name)]
        return ", ".join(found) or "none of AVX512-BF16, AMX-BF16, AMX-FP16"


def choose_dtype(spec: str, device: torch.device, capabilities: Capabilities | None = None) -> DtypeChoice:
    """The dtypes ``--dtype spec`` allows on ``device``; ValueError naming --dtype when the device cannot run it."""
    found = Capabilities.detect(device) if capabilities is None else capabilities
    if spec != "auto":
        dtype = DTYPES[spec]
        if device.type == "cuda" and dtype == torch.bfloat16 and not found.cuda_bf16:
            raise ValueError(f"--dtype {spec}: this GPU has no bfloat16 arithmetic (compute capability 8.0 or "
                             "later needed); use float16")
        if device.type == "cpu" and dtype != torch.float32 and dtype not in found.cpu_dtypes():
            _LOGGER.warning("--dtype %s: this CPU has no %s arithmetic (it has %s), so every operation converts; "
                            "expect it several times slower than float32", spec, spec, found.cpu_description())
        return DtypeChoice((dtype,), f"--dtype {spec}")
    if device.type == "cuda":
        return DtypeChoice((torch.float16,), "float16 on CUDA")
    native = found.cpu_dtypes()
    if not native:
        return DtypeChoice((torch.float32,), f"float32: this CPU computes no lower precision natively "
                                             f"({found.cpu_description()})")
    names = ", ".join(dtype_name(d) for d in (torch.float32, *native))
    return DtypeChoice((torch.float32, *native), f"this CPU has {found.cpu_description()}: timing {names}")


def runs_out_of_dtype(error: BaseException) -> bool:
    """Whether a model run failed for want of an operation in its dtype (PyTorch: "... not implemented for 'Half'")."""
    return isinstance(error, RuntimeError | NotImplementedError) and "not implemented for" in str(error)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
