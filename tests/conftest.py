"""Shared fixtures: the tiny offline checkpoint and small synthetic clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

FIXTURES = Path(__file__).parent / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """What a test needs from the machine: without it the test is skipped on a developer's
    machine and fails in CI (``CI=true``), where it must be there (see ``.ci/run``). Works
    in a test, a fixture or at module level."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str):
    """``pytest.importorskip`` that fails under ``CI=true``: the imported module."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, f"{name} is not installed (pip install -e '.[test]')")
TINY_CHECKPOINT = FIXTURES / "tiny-rollingdepth"
GOLDEN_A = FIXTURES / "golden" / "case_a"


@pytest.fixture(scope="session")
def tiny_pipe():
    """The tiny random checkpoint, fp32 on CPU, loaded once per session."""
    import torch

    from rollingdepth import RollingDepthPipeline

    torch.manual_seed(0)
    return RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT), torch_dtype=torch.float32)


def make_clip(num_frames: int, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth moving pattern plus texture: uint8 ``[N, H, W, 3]``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.uniform(0, 40, size=(height, width, 3)).astype(np.float32)
    frames = []
    for i in range(num_frames):
        phase = 0.3 * i
        base = 110 + 80 * np.sin(xx / 5.0 + phase)[..., None] * np.cos(yy / 7.0)[..., None]
        frames.append(np.clip(base + texture + np.array([0, 20, 40]), 0, 255))
    return np.stack(frames).astype(np.uint8)


@pytest.fixture
def clip():
    return make_clip


# run-video in a child process that stops at a point the run reports (after importing the
# modules named in HELD_RUN_IMPORTS, e.g. a stand-in model's): once it prints the
# `--progress json` event whose fields include all of argv[1] (a JSON object; or of the
# environment's HELD_AT, run-video's arguments then start at argv[1]), the event is written
# out, then "HELD <pid>", and the run waits right there, inside the progress report, until a
# signal arrives. A signal sent then finds the run at that point, however fast the machine.
# With HELD_MARK (a file name), only the first process to get there holds (it creates the
# file): e.g. one rank of torchrun, and not again after torchrun restarts it.
HELD_RUN = """
import importlib, json, os, sys, time
held_at = os.environ.get("HELD_AT")
want = json.loads(held_at or sys.argv[1])
args = sys.argv[1:] if held_at else sys.argv[2:]
for module in filter(None, os.environ.get("HELD_RUN_IMPORTS", "").split(",")):  # e.g. tests.stand_ins
    importlib.import_module(module)

def first_here():
    mark = os.environ.get("HELD_MARK")
    if not mark:
        return True
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False

class Held:
    def __init__(self, stream):
        self.stream, self.held = stream, False

    def write(self, text):
        written = self.stream.write(text)
        for line in text.splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if not self.held and event and all(event.get(k) == v for k, v in want.items()) and first_here():
                self.held = True
                self.stream.write(f"HELD {os.getpid()}\\n")
                self.stream.flush()
                while True:
                    time.sleep(0.05)
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.stderr = Held(sys.stderr)
from rollingdepth.frontends import run_video as cli
cli.main(args)
"""


def held_run(args, event: dict, cwd=None, env=None, timeout: float = 300):
    """Start ``run-video args`` (with ``--progress json --log-every 0``) in a child process and
    return it once it is held at ``event`` (e.g. ``{"stage": "merge", "done": 32}``); its
    stderr so far is the Popen's ``seen`` (a list of lines). Fails when the run ends first."""
    import subprocess
    import sys
    import threading

    env = dict(os.environ, HF_HUB_OFFLINE="1") if env is None else env
    proc = subprocess.Popen([sys.executable, "-c", HELD_RUN, __import__("json").dumps(event), *map(str, args),
                             "--progress", "json", "--log-every", "0"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout, proc.kill)  # only when the run never reaches the event
    watchdog.start()
    proc.seen = []
    try:
        for line in proc.stderr:
            proc.seen.append(line)
            if line.startswith("HELD "):
                return proc
    finally:
        watchdog.cancel()
    proc.wait()
    pytest.fail(f"the run ended (exit {proc.returncode}) before {event}: {''.join(proc.seen)[-3000:]}")
