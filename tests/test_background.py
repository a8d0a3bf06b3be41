"""Background work: read-ahead, ordered host writes, errors reach the caller, aborts drop work."""

import threading
import time

import numpy as np
import pytest
import torch

from rollingdepth.runtime.background import BackgroundQueue, HostWriter, prefetch


def test_prefetch_yields_everything_in_order_and_runs_ahead():
    produced, ahead = [], threading.Event()

    def source():
        for i in range(20):
            produced.append(i)
            if len(produced) == 5:
                ahead.set()
            yield i

    it = prefetch(source(), depth=4)
    assert next(it) == 0
    assert ahead.wait(60)  # the thread fills the queue meanwhile: 5 produced, 1 taken
    assert [0, *it] == list(range(20))


def test_prefetch_passes_the_iterators_error_on():
    def source():
        yield 1
        raise OSError("disk gone")

    it = prefetch(source())
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def test_prefetch_stops_its_thread_when_the_consumer_leaves():
    stopped = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            stopped.set()

    it = prefetch(source(), depth=2)
    next(it)
    it.close()
    assert stopped.wait(5)


def test_host_writer_writes_in_order_copies_of_what_was_put():
    out = np.zeros((6, 3), np.float32)
    t = torch.zeros(2, 3)
    with HostWriter(depth=2) as writer:
        for start in range(0, 6, 2):
            t.fill_(start)  # the same tensor is reused: the writer must have copied it
            writer.put(lambda a, s=start: out.__setitem__(slice(s, s + 2), a), t)
    np.testing.assert_array_equal(out[:, 0], [0, 0, 2, 2, 4, 4])


def test_host_writer_error_reaches_the_caller_and_later_work_is_dropped():
    calls = []

    def fail(a):
        raise OSError("no space left")

    writer = HostWriter()
    writer.put(fail, torch.ones(1))
    writer._queue.join()  # the failure has happened
    with pytest.raises(OSError, match="no space left"):
        writer.put(calls.append, torch.ones(1))  # raised by the next call
    writer.close(abort=True)
    assert calls == []

    gate = threading.Event()

    def fail_later(a):
        gate.wait(5)
        raise OSError("no space left")

    writer = HostWriter()
    writer.put(fail_later, torch.ones(1))
    writer.put(calls.append, torch.ones(1))  # queued behind the failure: dropped
    gate.set()
    with pytest.raises(OSError, match="no space left"):
        writer.drain()
    writer.close(abort=True)
    assert calls == []


def test_queue_abort_discards_waiting_calls():
    done = []
    q = BackgroundQueue(depth=8)
    q.submit(lambda: q._abort.wait(60))  # holds the thread until the abort is asked for
    for i in range(5):
        q.submit(done.append, i)
    q.close(abort=True)
    assert done == []


def test_queue_context_waits_for_the_work_on_success():
    done = []
    with BackgroundQueue(depth=2) as q:
        for i in range(10):
            q.submit(lambda i=i: (time.sleep(0.001), done.append(i)))
    assert done == list(range(10))
