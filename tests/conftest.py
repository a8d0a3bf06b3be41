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


def pytest_configure(config):
    """The processes the tests start get Ctrl-C (SIGINT) as a terminal's foreground job does.

    A shell without job control starts a background job (``.ci/run ... &``, ``nohup``) with
    SIGINT ignored, and an ignored signal stays ignored in every process started after it:
    run-video and the web page started by the Ctrl-C tests would then never see the SIGINT
    they are sent, and hang. Handled here, SIGINT reaches a started process at its default
    again (a handler does not survive ``exec``), so Python there raises KeyboardInterrupt."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """The test session's own cache folder: ``XDG_CACHE_HOME``, under which the time estimate keeps
    the measured throughput (``rollingdepth.runtime.estimate.cache_file``), points here for every
    test and every process a test starts (they inherit ``os.environ``), so no test reads the
    user's ``~/.cache/rollingdepth/throughput.json`` or rewrites it (a run corrects it when far
    off its estimate). Tests of the cache itself give each test a folder of its own on top."""
    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before


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


def work_folders(folder: Path) -> list[Path]:
    """The work folders run-video keeps in ``folder`` (none when it does not exist)."""
    return [p for p in folder.iterdir() if ".rollingdepth-work-" in p.name] if folder.exists() else []


HELD_CHILD = Path(__file__).parent / "held_child.py"
_HELD: list = []  # the held runs of the current test


@pytest.fixture(autouse=True)
def _no_held_run_outlives_its_test():
    """A held run waits for a signal forever: whatever the test did, none is left behind."""
    yield
    while _HELD:
        kill_group(_HELD.pop())


def rank_worker(proc, rank: int):
    """torchrun's worker of ``rank`` running ``held_child.py`` (a ``psutil.Process``); ``proc`` is
    the launcher. The other ranks start and end processes (ffmpeg) meanwhile: one that ends
    while it is looked at is skipped, not an error."""
    import psutil

    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and str(HELD_CHILD) in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    pytest.fail(f"no worker of rank {rank} under the launcher")


def kill_group(proc) -> None:
    """Kill what is left of ``proc`` (started with ``start_new_session=True``): its process
    group and every process it started (torchrun starts each worker in a session of its own)."""
    import signal

    import psutil

    if proc.poll() is not None:
        return  # it ended (its workers with it): its pid may be another process's by now
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def run_group(command, timeout: float, **popen_kwargs):
    """``subprocess.run(command, capture_output=True, text=True, timeout=timeout)`` in a process
    group of its own: when it times out (or the test stops meanwhile) every process of the
    group and every process it started are killed, the workers of ``torchrun`` or ``accelerate
    launch`` included."""
    import subprocess

    proc = subprocess.Popen([str(a) for a in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen_kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def held_run(args, event: dict, cwd=None, env=None, timeout: float = 300, launcher=None):
    """Start ``run-video args`` (with ``--progress json --log-every 0``) in a child process
    (tests/held_child.py) and return it once it is held at ``event`` (e.g. ``{"stage": "merge",
    "done": 32}``): it waits there, inside its progress report, until a signal comes, however
    fast the machine. Its stderr (read on in a thread, so that no process blocks writing) is
    the Popen's ``seen``, a list of lines. ``launcher`` (e.g. torchrun's argv) runs the script
    instead of Python; every process of it that reports ``event`` is held (under torchrun only
    rank 0 reports progress), in the launcher's first round only. The child leads a process group of its
    own (``kill_group``). Fails when the run ends first."""
    import json
    import subprocess
    import sys
    import threading

    env = dict(os.environ, HF_HUB_OFFLINE="1") if env is None else env
    command = [*(launcher or [sys.executable]), HELD_CHILD, json.dumps(event), *args, "--progress", "json",
               "--log-every", "0"]
    proc = subprocess.Popen([str(a) for a in command], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _HELD.append(proc)
    watchdog = threading.Timer(timeout, kill_group, [proc])  # only when the run never reaches the event
    watchdog.start()
    proc.seen = []
    try:
        for line in proc.stderr:
            proc.seen.append(line)
            if line == "HELD\n":
                proc.drain = threading.Thread(target=lambda: proc.seen.extend(proc.stderr), daemon=True)
                proc.drain.start()
                return proc
    finally:
        watchdog.cancel()
    proc.wait()
    pytest.fail(f"the run ended (exit {proc.returncode}) before {event}: {''.join(proc.seen)[-3000:]}")


@pytest.fixture
def seeks(monkeypatch):
    """The pts each read of a video seeks to (none: it decoded from frame 0)."""
    from rollingdepth.io import av_video

    calls = []
    seek_from = av_video._seek_from

    def spy(container, stream, seek_pts):
        calls.append(seek_pts)
        return seek_from(container, stream, seek_pts)

    monkeypatch.setattr(av_video, "_seek_from", spy)
    return calls
