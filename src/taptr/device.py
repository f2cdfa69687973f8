"""Device and precision: the one place that turns a user's request into a torch device and an
autocast dtype (used by `Tracker`, `taptr track/eval/train` and the trainer).

    device = resolve_device("auto")           # cuda when available, else cpu
    dtype = resolve_precision("bf16", device) # None means full precision (float32)
    with autocast(device, dtype): ...
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

import torch

from taptr.errors import TaptrError

_PRECISIONS = {"fp32": None, "float32": None, "none": None, "bf16": torch.bfloat16,
               "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
               "half": torch.float16}


def resolve_device(request=None, local_rank: int = 0) -> torch.device:
    """A device request -> `torch.device`.

    None or "auto": CUDA (device `local_rank`, the process's GPU under torchrun) when available,
    else CPU. "cuda" without an index also becomes cuda:`local_rank`. Other strings ("cpu",
    "cuda:1", "mps") and `torch.device`s pass through after a check.
    Raises `TaptrError` for an unknown name or a device this machine does not have.
    """
    if request is None or request == "auto":
        request = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(request)
    except (RuntimeError, TypeError):
        raise TaptrError(f"unknown device {request!r} (try cpu, cuda, cuda:0, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TaptrError(f"device {str(device)!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TaptrError("device 'mps' requested but MPS is not available")
    return device


def resolve_precision(request, device: torch.device) -> torch.dtype | None:
    """A precision request -> the autocast dtype (None: full float32 precision).

    request: None, "fp32"/"none", "bf16", "fp16" (or the torch dtype), or "auto" (bf16 on
    CUDA, full precision elsewhere: bf16 autocast is slower than float32 on the CPUs we measured).
    Raises `TaptrError` for an unknown name or fp16 on CPU.
    """
    if request is None:
        return None
    if request == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    dtype = request
    if isinstance(request, str):
        if request.lower() not in _PRECISIONS:
            raise TaptrError(f"unknown precision {request!r}; use fp32, bf16 or fp16")
        dtype = _PRECISIONS[request.lower()]
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in (torch.bfloat16, torch.float16):
        raise TaptrError(f"unsupported precision {dtype}; use fp32, bf16 or fp16")
    if dtype == torch.float16 and device.type == "cpu":
        raise TaptrError("fp16 needs a GPU; on CPU use bf16 or fp32")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The autocast context for `dtype` on `device` (a no-op context for full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_threads(count: int | None) -> None:
    """Use `count` CPU threads for PyTorch's operators (None: leave PyTorch's choice, which is
    every core). On a busy machine one thread can be several times faster than two
    (docs/tracking.md). Raises `TaptrError` for a count below 1."""
    if count is None:
        return
    if count < 1:
        raise TaptrError(f"--threads must be at least 1, got {count}")
    torch.set_num_threads(int(count))


# glibc `mallopt` parameters (malloc.h) and the values `keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20
_logger = logging.getLogger(__name__)


def keep_freed_memory() -> bool:
    """Let this process reuse the memory PyTorch frees instead of handing it back to the
    system (Linux with glibc only; elsewhere nothing happens). Returns whether it applied.

    By default glibc maps every large tensor freshly from the system and unmaps it when freed,
    so each new tensor of a few MB starts with page faults (the kernel zeroing its pages): 9
    million faults and a third of the time in the kernel for the paper preset on a CPU. Blocks
    up to 32 MB now come from the process's heap, which keeps up to 1 GB of freed memory
    (`mallopt`: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD; docs/tracking.md has the
    measurements). The cost: that memory stays with the process until it exits. It changes the
    whole process, so the library calls it only when asked (`Tracker(...,
    tune_allocator=True)`); the `taptr` commands ask. Process-wide, idempotent.
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    applied = all(mallopt(ctypes.c_int(option), ctypes.c_int(value)) == 1
                  for option, value in ALLOCATOR_SETTINGS)
    _logger.debug("keep freed memory in the process: %s", applied)
    return applied


#: (mallopt parameter, value) pairs `keep_freed_memory` sets, in order.
ALLOCATOR_SETTINGS = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                      (_M_TOP_PAD, _TOP_PAD))


def _glibc_mallopt():
    """glibc's `mallopt` function, or None (not Linux, or a C library without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no libc.so.6)
        return None


def precision_name(dtype: torch.dtype | None) -> str:
    """'fp32', 'bf16' or 'fp16'."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
