"""The process's heap setting for long runs (glibc): run-video's, not the library's.

:func:`limit_heap_growth` (called once by the command) keeps freed batch buffers from staying
resident; :func:`heap_reuse` lifts it around a loop that allocates the same temporaries many
times (the co-alignment's solve, :meth:`rollingdepth.runtime.passes.VideoRun.coalign`).
Figures: ``docs/performance.md``, "The heap".
"""

from __future__ import annotations

import contextlib

__all__ = ["HEAP_LIMIT_THRESHOLD", "HEAP_TRIM_THRESHOLD", "REUSE_THRESHOLD", "heap_reuse", "limit_heap_growth"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# limit_heap_growth's mmap threshold. 4 MiB: batch-sized buffers (a 768 x 432 map is 1.3 MB, a
# batch of them more) still go back to the system when freed, while the many smaller temporaries
# of a model's forward pass on a CPU are reused from the heap. At 64 KiB every one of those was
# a fresh mapping, faulted in page by page: 27 % slower on the golden case, with no less growth
# (docs/performance.md, "The heap").
HEAP_LIMIT_THRESHOLD = 4 * 2**20
# A fixed mmap threshold also fixes glibc's trim threshold at its 128 KiB default (it no longer
# follows the mmap threshold up), so the heap's free top went back to the system after nearly
# every forward pass and was faulted in again by the next: 2.7x the page faults and 7 % more
# time on the golden case. Up to 64 MiB of free top stay (a constant, not growing with the
# video): the page faults and time of glibc's default (docs/performance.md, "The heap").
HEAP_TRIM_THRESHOLD = 64 * 2**20
REUSE_THRESHOLD = 32 * 2**20  # glibc's largest dynamic threshold (64-bit): heap_reuse's
_heap_limited = False  # limit_heap_growth() succeeded in this process


def _libc():
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_heap_growth() -> bool:
    """Keep glibc from holding freed batch buffers: large blocks go back to the system.

    glibc raises its mmap threshold as big blocks are freed, after which the many batch-sized
    buffers of a long run come from the heap and stay resident: peak RSS then grows with the
    video although nothing is kept. Fixing the threshold (and the arena count) keeps the
    process's memory flat (measured: ``benchmarks/bench_memory.py``); the trim threshold is set
    with it, so that the heap's free top is not handed back and faulted in again after every
    forward pass (``benchmarks/bench_heap.py``). Process-wide, so the command calls it, not the
    library. Returns False where this is not glibc.
    """
    global _heap_limited
    libc = _libc()
    if libc is None:
        return False
    _heap_limited = (bool(libc.mallopt(_M_MMAP_THRESHOLD, HEAP_LIMIT_THRESHOLD))
                     and bool(libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)) and bool(libc.mallopt(_M_ARENA_MAX, 2)))
    return _heap_limited


@contextlib.contextmanager
def heap_reuse():
    """Within the block, freed buffers up to 32 MiB are reused from the heap, where
    :func:`limit_heap_growth` made every block over 4 MiB a fresh mapping; after it, the
    limit is back and the heap's free top is returned to the system (``malloc_trim``).

    An optimisation loop that allocates the same few MB temporaries hundreds of times would
    otherwise fault in fresh zeroed pages for each (measured: 524,000 against 75,000 to
    100,000 page faults per fast co-alignment of a 30-frame clip, ``docs/performance.md``).
    No-op where the limit is not in force.
    """
    libc = _libc() if _heap_limited else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, REUSE_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, HEAP_LIMIT_THRESHOLD)
        libc.malloc_trim(0)
