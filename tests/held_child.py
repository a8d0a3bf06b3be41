"""run-video, held at a reported point (tests/conftest.py: held_run).

argv[1] is a JSON object; once the run prints the ``--progress json`` event whose fields
include all of it, the event is written out, then a line ``HELD``, and the thread that reported
it waits right there, inside its progress report, until a signal arrives:

- the main thread waits until the signal's handler runs (run-video's raise ``KeyboardInterrupt``);
- another thread (the outputs' writer) waits for the signal and then, when a caller of its
  progress report holds a ``cancel`` event, until the run sets it: the point where the run
  tells that thread to stop. If the run never does, the thread stays held (the test times out).

Under torchrun, only in the launcher's first round (not after an elastic restart). Before the
run, the modules named in the environment's HELD_RUN_IMPORTS (comma-separated, e.g.
``tests.stand_ins``, a stand-in model's) are imported, found from the working folder.
"""

import importlib
import json
import os
import signal
import sys
import threading
import time

WANT = json.loads(sys.argv[1])
FIRST_ROUND = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
SIGNALLED = threading.Event()
_install = signal.signal


def _noting(handler):
    """``handler``, first noting that a signal arrived."""
    if not callable(handler):
        return handler

    def noted(signum, frame):
        SIGNALLED.set()
        return handler(signum, frame)

    return noted


def _caller_cancel():
    """The ``cancel`` event of the nearest caller that has one, or None."""
    frame = sys._getframe(2)
    while frame is not None:
        cancel = frame.f_locals.get("cancel")
        if isinstance(cancel, threading.Event):
            return cancel
        frame = frame.f_back
    return None


def hold() -> None:
    if threading.current_thread() is threading.main_thread():
        while not SIGNALLED.is_set():
            time.sleep(0.05)  # the handler runs (and raises) here
        return
    cancel = _caller_cancel()
    SIGNALLED.wait()
    if cancel is not None:
        cancel.wait()


class Held:
    """stderr that holds the thread that reports the wanted event."""

    def __init__(self, stream):
        self.stream, self.held = stream, not FIRST_ROUND

    def write(self, text):
        written = self.stream.write(text)
        for line in text.splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if not self.held and all(event.get(k) == v for k, v in WANT.items()):
                self.held = True
                self.stream.write("HELD\n")
                self.stream.flush()
                hold()
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # as `python -c` has it (not this folder)
    for module in filter(None, os.environ.get("HELD_RUN_IMPORTS", "").split(",")):
        importlib.import_module(module)
    signal.signal = lambda signum, handler: _install(signum, _noting(handler))
    signal.signal(signal.SIGINT, signal.getsignal(signal.SIGINT))
    sys.stderr = Held(sys.stderr)
    from rollingdepth.frontends import run_video

    run_video.main(sys.argv[2:])
