"""Co-alignment wired end to end (rollingdepth/method/coalign.py through runtime/passes.py): with snippets that are really misaligned (each an affine copy
of one depth video with its own scale and shift, :mod:`tests.stand_ins`), the pipeline and
run-video (maps kept, maps decoded again, a run killed in the merge and resumed) give exactly
the stand-alone ``coalign()`` of the same snippets, and a merge without alignment is far off.

A merge that ignored the scales, applied another snippet's, or a resumed run that did not use
the scales it saved, fails here (the golden case cannot tell: its snippets nearly agree already).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rollingdepth.frontends import run_video as cli
from rollingdepth.method.coalign import coalign, merge_snippets
from rollingdepth.method.snippets import snippet_indices

from .conftest import TINY_CHECKPOINT
from .stand_ins import (HOLD_ENV, depth_video, expected_snippets, frames_with_ids, save_frames_with_ids,
                        save_stand_in_checkpoint)

REPO = Path(__file__).resolve().parent.parent
FRAMES, SIZE, DILATIONS, N_VIEW = 40, (32, 48), [1, 10], 3  # 40 frames: two merge windows of 32
PLAN = [(d, N_VIEW) for d in DILATIONS]
# run-video in a child process, with the disk store's free space read as 0: it keeps only the
# snippets' latents and decodes them again in the merge. diffusers loads the stand-in's classes
# from a module already imported.
_NO_DISK_ROOM = """
import sys
import tests.stand_ins
from rollingdepth.runtime.stores import DiskStore
DiskStore.free_bytes = lambda self: 0
from rollingdepth.frontends import run_video as cli
cli.main(sys.argv[1:])
"""


def renormalise(v: np.ndarray) -> np.ndarray:
    return (v - v.min()) / (v.max() - v.min()) * 2 - 1


def standalone(snippets, mode: str) -> np.ndarray:
    """``coalign()`` on its own, re-normalised like the pipeline's output."""
    depth, _ = coalign(snippets, DILATIONS, mode=mode)
    return renormalise(depth)


def unaligned(snippets) -> np.ndarray:
    """The merge with every scale 1 and every shift 0, re-normalised."""
    ones = [np.ones(len(s), np.float32) for s in snippets]
    zeros = [np.zeros(len(s), np.float32) for s in snippets]
    return renormalise(merge_snippets(snippets, DILATIONS, ones, zeros, min(float(s.min()) for s in snippets), FRAMES))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_stand_in_checkpoint(tmp_path_factory.mktemp("stand_in") / "checkpoint", TINY_CHECKPOINT)


@pytest.fixture(scope="module")
def pipe(checkpoint):
    from rollingdepth import RollingDepthPipeline

    return RollingDepthPipeline.from_pretrained(str(checkpoint), torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def snippets(pipe):
    """The snippets the stand-in gives for the clip (the pipeline's own, checked against the design)."""
    out = pipe(frames_with_ids(FRAMES, *SIZE), processing_res=0, dilations=DILATIONS, snippet_lengths=[N_VIEW])
    for got, want in zip(out.snippets, expected_snippets(FRAMES, PLAN, SIZE)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    return out.snippets


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """The clip as a folder of PNGs (lossless: each frame keeps its identity)."""
    return save_frames_with_ids(tmp_path_factory.mktemp("input") / "clip", FRAMES, *SIZE)


def run_video_args(checkpoint, clip_folder, out, *extra):
    return [str(clip_folder), "-c", str(checkpoint), "--res", "0", "-d", ",".join(map(str, DILATIONS)),
            "--snippet-lengths", str(N_VIEW), "--dtype", "fp32", "--max-vae-bs", "4", "--no-save-sbs",
            "--cmap", "Greys_r", "-o", str(out), *extra]


def run_cli(args) -> int:
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    return info.value.code


def test_snippets_are_misaligned_copies(snippets):
    """The premise: the snippets differ by far more than any tolerance below, and aligning them
    recovers the depth video (up to one affine map) far better than averaging them."""
    depth, info = coalign(snippets, DILATIONS, mode="fast")
    assert max(float(np.abs(s - 1).max()) for s in info["scales"]) > 0.5
    video = depth_video(torch.arange(FRAMES), *SIZE).numpy()

    def affine_error(v):
        fit = np.polyfit(v.ravel(), video.ravel(), 1)
        return float(np.abs(video - np.polyval(fit, v)).mean())

    assert affine_error(depth) < 0.25 * affine_error(unaligned(snippets))
    assert np.abs(standalone(snippets, "fast") - unaligned(snippets)).max() > 0.3


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_pipeline_equals_standalone_coalign(pipe, snippets, mode):
    out = pipe(frames_with_ids(FRAMES, *SIZE), processing_res=0, dilations=DILATIONS, snippet_lengths=[N_VIEW],
               coalign=mode)
    want = standalone(out.snippets, mode)
    np.testing.assert_allclose(out.depth_coaligned, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.depth, want, atol=1e-6, rtol=0)
    assert np.abs(out.depth - unaligned(out.snippets)).max() > 0.3


@pytest.mark.parametrize("maps", ["kept", "decoded again"])
def test_run_video_equals_standalone_coalign(checkpoint, clip_folder, snippets, tmp_path, monkeypatch, maps):
    """run-video on the disk store, with the snippet maps kept or (no room on the disk) decoded
    again from their latents in the merge."""
    from rollingdepth.runtime.stores import DiskStore

    if maps == "decoded again":
        monkeypatch.setattr(DiskStore, "free_bytes", lambda self: 0)
    assert run_cli(run_video_args(checkpoint, clip_folder, tmp_path, "-q")) == 0
    report = json.loads((tmp_path / "clip_run.json").read_text())
    assert report["settings"]["store"] == "disk" and report["settings"]["decoded_maps"] == maps
    depth = np.load(tmp_path / "clip_pred.npy")
    np.testing.assert_allclose(depth, standalone(snippets, "fast"), atol=1e-6, rtol=0)
    assert np.abs(depth - unaligned(snippets)).max() > 0.3


def _journal(out: Path) -> list[dict]:
    """The checkpoints of the one work folder in ``out`` that parse (the first line is its header)."""
    [folder] = [p for p in out.iterdir() if ".rollingdepth-work-" in p.name]
    entries = []
    for line in (folder / "journal.jsonl").read_text().split("\n")[1:]:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return entries


def test_run_killed_in_the_merge_resumes_with_its_saved_scales(checkpoint, clip_folder, snippets, tmp_path,
                                                               monkeypatch):
    """Maps decoded again in the merge; the stand-in holds the run at the first decode of the
    second merge window, after the run reported the first window merged (a ``--progress json``
    event, then its journal entry); SIGKILL there. The resumed run co-aligns nothing again (it
    reads the scales it saved) and merges the second window only."""
    flat = [snippet_indices(FRAMES, n, d).reshape(-1) for d, n in PLAN]
    snippet_frames = sum(len(f) for f in flat)
    first_window = sum(int((f < 32).sum()) for f in flat)  # snippet frames merged in window 1
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{HOLD_ENV: str(snippet_frames + first_window)})
    args = run_video_args(checkpoint, clip_folder, tmp_path, "--progress", "json", "--log-every", "0")
    proc = subprocess.Popen([sys.executable, "-c", _NO_DISK_ROOM, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, proc.kill)  # only if the run never reports the merge
    watchdog.start()
    seen, reached = [], False
    try:
        for line in proc.stderr:
            event = json.loads(line) if line.startswith("{") else {}
            seen.append(line)
            if event.get("stage") == "merge" and event.get("done") == 32:
                reached = True
                break
        assert reached, "".join(seen)[-3000:]
        while not any(e["stage"] == "merge" for e in _journal(tmp_path)):  # held: the entry is on its way
            threading.Event().wait(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    entries = _journal(tmp_path)
    merges = [e["state"] for e in entries if e["stage"] == "merge"]
    assert [m["windows"] for m in merges] == [1] and merges[0]["lo"] <= merges[0]["hi"]  # the first window's range
    assert any(e["stage"] == "coalign" for e in entries) and not (tmp_path / "clip_pred.npy").exists()

    assert run_cli(run_video_args(checkpoint, clip_folder, tmp_path, "-q")) == 0
    report = json.loads((tmp_path / "clip_run.json").read_text())
    assert report["settings"]["decoded_maps"] == "decoded again"
    assert report["counts"]["unet_calls"] == 0  # nothing but the merge was done again
    assert report["counts"]["vae_decodes"] == snippet_frames - first_window  # the second window's
    depth = np.load(tmp_path / "clip_pred.npy")
    np.testing.assert_allclose(depth, standalone(snippets, "fast"), atol=1e-6, rtol=0)


@pytest.mark.parametrize("journal", ["with the range", "of an earlier version"])
def test_resumed_merge_knows_the_range_of_the_windows_before(pipe, tmp_path, journal):
    """The merge records the merged video's range with each window, so that the re-normalisation
    needs no pass of its own. A run resumed after the first window uses the recorded range; a
    journal written before the range was recorded makes the re-normalisation find it by a pass.
    Either way the prediction equals the uninterrupted run's (the second window alone has
    another range: ignoring or inventing the first window's fails here)."""
    from rollingdepth.method.settings import MethodSettings
    from rollingdepth.runtime.passes import run
    from rollingdepth.runtime.stores import JOURNAL, DiskStore

    settings = MethodSettings(processing_res=0, dilations=DILATIONS, snippet_lengths=[N_VIEW]).validate()

    def predict(store):
        result = run(pipe, iter(frames_with_ids(FRAMES, *SIZE)), store, settings,
                     generator=torch.Generator().manual_seed(0), num_frames_hint=FRAMES)
        depth = np.array(result.depth[:])
        store.close()
        return depth

    whole = predict(DiskStore(tmp_path))
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if i and json.loads(line)["stage"] == "merge")
    entry = json.loads(lines[cut])  # the first window's checkpoint: a run killed after it
    assert entry["state"]["windows"] == 1
    if journal == "of an earlier version":
        entry["state"] = {"windows": 1}
    (tmp_path / JOURNAL).write_text("\n".join([*lines[:cut], json.dumps(entry)]) + "\n")
    np.testing.assert_allclose(predict(DiskStore(tmp_path)), whole, atol=1e-6, rtol=0)
