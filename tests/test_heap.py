"""run-video's heap setting (glibc, ``runtime/heap.py``): lifted only around a block of reuse,
and the heap's top kept between temporaries."""

import sys

import pytest

from .conftest import require


def test_heap_reuse_lifts_run_video_heap_limit_for_the_block_only(monkeypatch):
    """Under limit_heap_growth (run-video), the block reuses freed blocks up to 32 MiB; after it
    the 64 KiB limit is back and the free heap top trimmed. Without the limit: nothing done."""
    import rollingdepth.runtime.heap as heap

    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append(("mallopt", option, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(heap, "_libc", lambda: FakeLibc())
    monkeypatch.setattr(heap, "_heap_limited", False)
    with heap.heap_reuse():
        assert calls == []
    assert calls == []
    assert heap.limit_heap_growth()
    assert heap._heap_limited
    calls.clear()
    with pytest.raises(RuntimeError), heap.heap_reuse():
        assert calls == [("mallopt", heap._M_MMAP_THRESHOLD, 32 * 2**20)]
        raise RuntimeError("the limit comes back on the way out too")
    assert calls[1:] == [("mallopt", heap._M_MMAP_THRESHOLD, heap.HEAP_LIMIT_THRESHOLD), ("trim", 0)]


_HEAP_CHURN = r"""
import resource, sys
import numpy as np
from rollingdepth.runtime.heap import limit_heap_growth
assert limit_heap_growth()
keep = np.ones(2**18)  # something below, so that the churn happens at the heap's top
for _ in range(3):  # warm-up
    np.ones(2**18)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):  # a 2 MiB temporary, under the 4 MiB mmap threshold: from the heap's top
    np.ones(2**18)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_run_video_heap_setting_keeps_the_heap_top_between_temporaries():
    """Under run-video's heap setting a freed block below the mmap threshold stays in the heap
    for the next one: a fixed mmap threshold alone left glibc's trim threshold at 128 KiB, and
    each 2 MiB temporary was handed back and faulted in again (512 page faults each)."""
    import subprocess

    require(sys.platform.startswith("linux"), "glibc's malloc settings: Linux only")
    done = subprocess.run([sys.executable, "-c", _HEAP_CHURN], capture_output=True, text=True, check=True)
    faults = int(done.stdout.strip())
    assert faults < 200 * 512 // 10, faults
