"""Work off the main thread: read-ahead of an iterator, and host copies with file writes.

The accelerator's loop should neither wait for a frame to be decoded nor for a result to
reach the host and the disk. :func:`prefetch` runs an iterator ahead in a thread;
:class:`HostWriter` starts device-to-host copies without blocking the device's stream
(into pinned memory on CUDA) and finishes them, with whatever the result is written to, in
a thread. Both hold a bounded number of items, so memory does not grow.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

import torch

__all__ = ["BackgroundQueue", "HostWriter", "prefetch"]


def prefetch(iterable: Iterable, depth: int = 8) -> Iterator:
    """Iterate ``iterable`` in a background thread, at most ``depth`` items ahead.

    Errors raised by the iterator reach the consumer; leaving the loop early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        items = iter(iterable)
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # hand the error to the consumer
            put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator left early: its files and threads are let go here, now
                close()

    thread = threading.Thread(target=work, daemon=True, name="rollingdepth-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class BackgroundQueue:
    """Calls ``fn(*args)`` in order in one background thread; at most ``depth`` calls wait.

    Errors are raised by the next ``submit``, ``drain`` or ``close``, and the calls queued
    after a failed one are skipped. Use as a context manager: leaving it waits for the queued
    calls, or discards them when leaving on an exception.
    """

    def __init__(self, depth: int = 4, name: str = "rollingdepth-background"):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name=name)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if not self._abort.is_set() and self._error is None:
                    job()
            except BaseException as exc:
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._abort.set()  # what was queued behind the failed call is dropped
            raise error

    def submit(self, fn: Callable, *args) -> None:
        """Queue ``fn(*args)`` (blocks while ``depth`` calls wait)."""
        self._raise()
        self._queue.put(lambda: fn(*args))

    def drain(self, cancel: threading.Event | None = None) -> None:
        """Wait until everything queued so far is done; ``KeyboardInterrupt`` once ``cancel`` is set."""
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
                self._queue.all_tasks_done.wait(0.1)
        self._raise()

    def close(self, abort: bool = False) -> None:
        """Finish (or with ``abort`` discard) the queued calls and stop the thread."""
        if abort:
            self._abort.set()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if not abort:
            self._raise()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abort=exc_type is not None)


class HostWriter(BackgroundQueue):
    """Device results to the host, then ``fn(*arrays)``, in order, in a background thread.

    ``put(fn, *tensors)`` returns at once (unless ``depth`` jobs already wait): on CUDA the
    tensors are copied into pinned host memory with ``non_blocking=True`` and the thread waits
    for that copy's event; elsewhere they are copied. ``fn`` receives NumPy arrays
    (``as_numpy=True``) or host tensors.
    """

    def __init__(self, depth: int = 4):
        super().__init__(depth, name="rollingdepth-writer")

    def put(self, fn: Callable, *tensors: torch.Tensor, as_numpy: bool = True, copy: bool = True) -> None:
        """Queue ``fn(*host copies of tensors)``; the tensors may be reused once this returns.

        ``copy=False``: host tensors the caller will not touch again are passed as they are.
        """
        host, on_cuda = [], False
        for t in tensors:
            t = t.detach()
            if t.device.type == "cuda":
                buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                buf.copy_(t, non_blocking=True)
                host.append(buf)
                on_cuda = True
            else:
                host.append(t.clone() if copy else t)  # the caller may overwrite its tensor
        event = None
        if on_cuda:
            event = torch.cuda.Event()
            event.record()

        def finish():
            if event is not None:
                event.synchronize()
            fn(*(t.numpy() if as_numpy else t for t in host))

        self.submit(finish)
