"""Choosing the device and dtype (CUDA, then MPS, then CPU; fp16 falls back to fp32 on CPU),
host-to-device copies that do not wait, and the process's heap setting for long runs."""

from __future__ import annotations

import warnings

import torch

__all__ = ["DTYPES", "default_device", "is_out_of_memory", "limit_heap_growth", "resolve_device", "resolve_dtype",
           "to_device"]

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks :func:`default_device`; anything else is checked."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a device name (cuda, cuda:1, mps, cpu)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device: {device!r} does not exist ({torch.cuda.device_count()} GPUs)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device: {device!r} asked for, but MPS is not available here")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Map a name to a dtype; fp16 on CPU is slow and imprecise, so use fp32 there (one warning)."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        key = str(dtype).lower()
        if key not in DTYPES:
            raise ValueError(f"dtype: unknown value {dtype!r}; expected fp16, bf16 or fp32")
        resolved = DTYPES[key]
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype: {resolved} is not supported; expected fp16, bf16 or fp32")
    if resolved == torch.float16 and torch.device(device).type == "cpu":
        warnings.warn("fp16 on CPU is slow and imprecise: running in fp32 instead", stacklevel=2)
        return torch.float32
    return resolved


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator's (or the host allocator's) out-of-memory error."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    text = str(exc).lower()
    return isinstance(exc, oom_types) or "out of memory" in text or "can't allocate memory" in text


def to_device(tensor: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host tensor on ``device`` (then in ``dtype``), without the host waiting for the device.

    A plain host-to-CUDA copy from pageable memory synchronises with the stream: the host
    would wait for every kernel queued so far. Staged through pinned memory, the copy is
    queued like a kernel (PyTorch's pinned allocator keeps the buffer until the copy is done).
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        staged = tensor if tensor.is_pinned() else tensor.pin_memory()
        tensor = staged.to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor if dtype is None else tensor.to(dtype)


def limit_heap_growth() -> bool:
    """Keep glibc from holding freed batch buffers: large blocks go back to the system.

    glibc raises its mmap threshold as big blocks are freed, after which the many batch-sized
    buffers of a long run come from the heap and stay resident: peak RSS then grows with the
    video although nothing is kept. Fixing the threshold (and the arena count) keeps the
    process's memory flat (measured: ``benchmarks/bench_memory.py``). Process-wide, so the
    command calls it, not the library. Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold, m_arena_max = -3, -8
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_arena_max, 2))
    except (OSError, AttributeError):
        return False
