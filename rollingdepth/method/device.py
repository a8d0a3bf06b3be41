"""Choosing the device and dtype (CUDA, then MPS, then CPU; on a CPU, fp16 runs in bf16 where
the CPU computes bf16 natively, else in fp32), host-to-device copies that do not wait, the
and the host's handling of subnormal floats. (The process's heap setting for long runs is
run-video's: :mod:`rollingdepth.runtime.heap`.)"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import torch

__all__ = ["CPU_BF16_ENV", "DTYPES", "cpu_dtype_for", "cpu_has_native_bf16", "default_device", "denormals_flushed",
           "flush_denormals", "is_out_of_memory", "resolve_device", "resolve_dtype", "to_device"]

# "1" or "0" forces cpu_has_native_bf16() on or off (tests, or a CPU whose flags mislead).
CPU_BF16_ENV = "ROLLINGDEPTH_CPU_BF16"
# /proc/cpuinfo flags of x86 CPUs that compute bf16 dot products natively (AVX512-BF16: AMD
# Zen 4 and newer, Intel Cooper Lake; AMX: Intel Sapphire Rapids and newer).
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

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
    """Map a name to a dtype; fp16 on a CPU becomes :func:`cpu_dtype_for`'s choice (one warning)."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        key = str(dtype).lower()
        if key not in DTYPES:
            raise ValueError(f"dtype: unknown value {dtype!r}; expected fp16, bf16 or fp32")
        resolved = DTYPES[key]
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype: {resolved} is not supported; expected fp16, bf16 or fp32")
    if torch.device(device).type == "cpu":
        return cpu_dtype_for(resolved, stacklevel=2)
    return resolved


def cpu_dtype_for(dtype: torch.dtype, stacklevel: int = 1) -> torch.dtype:
    """The dtype a CPU run uses for ``dtype``: fp16 (slow and imprecise on CPUs) becomes bf16
    where the CPU computes bf16 natively, else fp32, with one warning (``stacklevel`` as in
    ``warnings.warn``, counted from the caller); fp32 and bf16 are kept."""
    if dtype != torch.float16:
        return dtype
    if cpu_has_native_bf16():
        warnings.warn("fp16 on CPU: running in bf16 instead (this CPU computes bf16 natively; "
                      "ask for fp32 for full precision)", stacklevel=stacklevel + 1)
        return torch.bfloat16
    warnings.warn("fp16 on CPU is slow and imprecise: running in fp32 instead", stacklevel=stacklevel + 1)
    return torch.float32


def cpu_has_native_bf16() -> bool:
    """True where the CPU has AVX512-BF16 or AMX-BF16 (``/proc/cpuinfo`` flags, Linux x86).

    ``ROLLINGDEPTH_CPU_BF16=1`` or ``=0`` forces the answer; elsewhere (macOS, ARM) False.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{CPU_BF16_ENV}: expected 0 or 1, got {forced!r}")
    return _cpuinfo_has_bf16()


@functools.lru_cache(maxsize=4)
def _cpuinfo_has_bf16(path: str = "/proc/cpuinfo") -> bool:
    """Whether the first ``flags`` line of ``path`` names a native bf16 extension."""
    try:
        with open(path) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


@contextlib.contextmanager
def flush_denormals(enabled: bool = True):
    """Within the block, the CPU treats subnormal floats as zero (``torch.set_flush_denormal``);
    the previous setting is restored after. Subnormal operands can make x86 arithmetic many
    times slower (much more on Intel than on AMD cores). No-op where unsupported."""
    if not enabled:
        yield
        return
    before = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def denormals_flushed() -> bool:
    """Whether this thread now flushes subnormal floats to zero (torch has no getter: a
    subnormal float32 is multiplied by one, which leaves it unchanged unless flushing)."""
    tiny = torch.tensor([1e-40], dtype=torch.float64).to(torch.float32)  # subnormal in float32
    return bool((tiny * 1.0)[0] == 0.0)


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
