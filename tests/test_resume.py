"""Resuming a killed run (rollingdepth/runtime/stores.py, checkpoints.py, video_job.py): kills at moments spread over every stage, changed settings, damaged
files, a full disk, leftover work folders."""

import errno
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rollingdepth.frontends import run_video as cli
from rollingdepth.method.snippets import snippet_indices
from rollingdepth.runtime.stores import JOURNAL, DiskStore

from .conftest import TINY_CHECKPOINT, held_run, make_clip, rank_worker, run_group
from .test_run_video import write_clip

ARGS = ["-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,4", "--dtype", "fp32", "--refine-step", "2",
        "--max-vae-bs", "2", "--unet-batch-size", "2", "--save-snippets", "--cmap", "Greys_r", "-q"]
FRAMES = 20


def run_cli(args) -> int:
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    return info.value.code


def journal(out: Path) -> list[dict]:
    """The checkpoints of the (one) work folder in ``out`` that parse."""
    [folder] = [p for p in out.iterdir() if ".rollingdepth-work-" in p.name]
    entries = []
    for line in (folder / JOURNAL).read_text().split("\n")[1:]:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return entries


def work_folders(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if ".rollingdepth-work-" in p.name]


def unet_calls_done(entries: list[dict], report: dict) -> int:
    """UNet calls a killed run completed, from its checkpoints (2 snippets per call)."""
    s = report["settings"]
    calls = 0
    snippets = [e["state"] for e in entries if e["stage"] == "snippets"]
    if snippets:
        calls += sum(-(-g["snippets"] // 2) for g in snippets[-1]["groups"])
    refine = [e["state"]["steps"] for e in entries if e["stage"] == "refine"]
    for d in s["refine_dilations"][: refine[-1] if refine else 0]:
        calls += -(-len(snippet_indices(FRAMES, s["refine_snippet_len"], d)) // 2)
    return calls


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    return write_clip(folder / "clip.mp4", make_clip(FRAMES, 30, 44))


@pytest.fixture(scope="module")
def baseline(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    assert run_cli([clip, *ARGS, "-o", out]) == 0
    report = json.loads((out / "clip_run.json").read_text())
    return np.load(out / "clip_pred.npy"), report, out


# Moments spread over every stage, as the run reports them (--progress json): VAE batches of 2
# frames, UNet batches of 2 snippets (18 at d=1, then 12 at d=4), one merge window, the
# refinement's start (after re-normalisation), its steps and its decoding.
MOMENTS = {
    "encode-1": {"stage": "encode", "done": 2},
    "encode-4": {"stage": "encode", "done": 8},
    "snippets-1": {"stage": "snippets", "dilation": 1, "done": 2},
    "snippets-6": {"stage": "snippets", "dilation": 1, "done": 12},
    "snippets-12": {"stage": "snippets", "dilation": 4, "done": 6},
    "coalign": {"stage": "coalign", "done": 1},
    "merge": {"stage": "merge", "done": FRAMES},
    "renormalise": {"stage": "refine", "done": 0},
    "refine-1": {"stage": "refine", "done": 1},
    "refine_decode-3": {"stage": "refine decode", "done": 6},
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, clip, baseline, moment):
    """SIGKILL while the run is held at a reported moment (tests/conftest.py: held_run), then
    the same command again: the result of an uninterrupted run, without redoing finished work."""
    depth, report, base_out = baseline
    out = tmp_path / "out"
    proc = held_run([clip, *[a for a in ARGS if a != "-q"], "-o", out], MOMENTS[moment])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entries = journal(out)
    assert not (out / "clip_pred.npy").exists() and not (out / "clip_run.json").exists()

    assert run_cli([clip, *ARGS, "-o", out]) == 0
    np.testing.assert_allclose(np.load(out / "clip_pred.npy"), depth, atol=1e-5, rtol=0)
    resumed = json.loads((out / "clip_run.json").read_text())
    # completed batches are not done again
    assert resumed["counts"]["unet_calls"] == report["counts"]["unet_calls"] - unet_calls_done(entries, report)
    encoded = any(e["stage"] == "encode" and e["state"].get("complete") for e in entries)
    refined = any(e["stage"] == "refine" for e in entries)  # its encoded depth is kept with each step
    if encoded:
        assert resumed["counts"]["vae_encodes"] == report["counts"]["vae_encodes"] - FRAMES * (1 + refined)
    snippets_before = np.load(base_out / "clip_snippets.npz")
    snippets_after = np.load(out / "clip_snippets.npz")
    for key in ("snippets_0", "snippets_1"):
        np.testing.assert_allclose(snippets_after[key], snippets_before[key], atol=1e-6)
    assert not work_folders(out)  # removed after success


def interrupted_run(clip, out, monkeypatch, where="merge"):
    """A run stopped by Ctrl-C when the run reaches its pass ``where``."""
    from rollingdepth.runtime.passes import VideoRun

    def stop(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(VideoRun, where, stop)
        assert run_cli([clip, *ARGS, "-o", out]) == 130
    assert work_folders(out) and not list(out.glob("clip_*"))


def test_changed_setting_is_refused_then_restart(tmp_path, clip, baseline, monkeypatch, capsys):
    out = tmp_path / "out"
    interrupted_run(clip, out, monkeypatch)
    capsys.readouterr()
    other = [a if a != "1,4" else "1,3" for a in ARGS]
    assert run_cli([clip, *other, "-o", out]) == 1
    err = capsys.readouterr().err
    line = [l for l in err.splitlines() if "Error:" in l]
    assert len(line) == 1 and "--dilations [1, 4] then, [1, 3] now" in line[0] and "--restart" in line[0], err
    assert work_folders(out)  # nothing deleted silently
    assert run_cli([clip, *other, "-o", out, "--restart"]) == 0
    report = json.loads((out / "clip_run.json").read_text())
    assert report["settings"]["dilations"] == [1, 3] and not work_folders(out)


def test_damaged_spilled_file_is_computed_again(tmp_path, clip, baseline, monkeypatch, capsys):
    depth, report, _ = baseline
    out = tmp_path / "out"
    interrupted_run(clip, out, monkeypatch)
    [folder] = work_folders(out)
    maps = folder / "snippets_0.npy"
    data = bytearray(maps.read_bytes())
    data[-100:] = b"\xff" * 100  # the last rows of the first dilation's maps
    maps.write_bytes(bytes(data))
    capsys.readouterr()
    assert run_cli([clip, *[a for a in ARGS if a != "-q"], "-o", out]) == 0
    assert "damaged" in capsys.readouterr().err
    np.testing.assert_allclose(np.load(out / "clip_pred.npy"), depth, atol=1e-5, rtol=0)
    resumed = json.loads((out / "clip_run.json").read_text())
    assert 0 < resumed["counts"]["unet_calls"] < report["counts"]["unet_calls"]  # from the damaged batch on


def test_full_disk_one_line_no_partial_output_then_resume(tmp_path, clip, baseline, monkeypatch, capsys):
    depth, _, _ = baseline
    out = tmp_path / "out"
    original, calls = DiskStore.write, []

    def write(self, array, rows, values):
        calls.append(1)
        if len(calls) > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, array, rows, values)

    with monkeypatch.context() as m:
        m.setattr(DiskStore, "write", write)
        capsys.readouterr()
        assert run_cli([clip, *ARGS, "-o", out]) == 1
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if "Error:" in l]
    assert len(lines) == 1 and "no space left on the disk of" in lines[0] and "GiB more" in lines[0], err
    assert "pass --work-dir on a larger disk" in lines[0], err  # run-video's advice, given to its store
    assert "Traceback" not in err
    assert not list(out.glob("clip_*")) and work_folders(out)
    assert run_cli([clip, *ARGS, "-o", out]) == 0  # space is back: it resumes
    np.testing.assert_allclose(np.load(out / "clip_pred.npy"), depth, atol=1e-5, rtol=0)


def test_list_and_clean_work_folders(tmp_path, clip, monkeypatch, capsys):
    out = tmp_path / "out"
    interrupted_run(clip, out, monkeypatch, where="coalign")
    stranger = out / ".other.rollingdepth-work-12345678"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("not ours")
    capsys.readouterr()
    assert run_cli(["--list-work", out]) == 0
    listed = capsys.readouterr().out
    [folder] = [p for p in work_folders(out) if p != stranger]
    assert folder.name in listed and "MB" in listed and "h old" in listed and "after snippets" in listed
    assert stranger.name not in listed
    assert run_cli(["--clean-work", out]) == 0
    assert not folder.exists() and stranger.exists()


def test_sigterm_keeps_resumable_work_only(tmp_path, clip):
    """SIGTERM stops like Ctrl-C: exit 130, the work folder kept with its journal (no empty one).
    Sent while the run is held after its first UNet batch (tests/conftest.py: held_run)."""
    out = tmp_path / "out"
    proc = held_run([clip, *[a for a in ARGS if a != "-q"], "-o", out], MOMENTS["snippets-1"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, "".join(proc.seen)[-2000:]
    [folder] = work_folders(out)
    assert (folder / JOURNAL).exists() and not list(out.glob("clip_*"))


@pytest.mark.parametrize("restart", ["relaunched", "elastic"])
def test_torchrun_rank_killed_then_restarted_does_each_video_once(tmp_path, restart):
    """Under torchrun, rank 0 is killed mid-video, held after its first 4 snippets (their
    checkpoint written; tests/conftest.py: held_run; only rank 0 reports progress), and the
    launcher then stops rank 1 with SIGTERM. ``relaunched``: the same command launched again; ``elastic``: torchrun
    --max-restarts 1 starts both ranks again by itself (a new process group in a store that
    still holds the dead round's addresses). Either way both shares resume: every video ends
    complete, none finished before the kill is done again, and the killed video is resumed,
    not redone."""

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(4):
        write_clip(clips / f"v{i}.mp4", make_clip(16, 24, 32, seed=i))
    out = tmp_path / "out"
    args = [clips, "-c", TINY_CHECKPOINT, "--res", "0", "-d", "1,4", "--dtype", "fp32", "--unet-batch-size", "1",
            "--max-vae-bs", "4", "--no-save-sbs", "--cmap", "Greys_r", "--skip-existing", "-o", out]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                *(["--max-restarts", "1"] if restart == "elastic" else [])]
    held = {"stage": "snippets", "dilation": 1, "done": 4, "rank": 0}  # 12 frames decoded: a checkpoint
    proc = held_run(args, held, env=env, launcher=launcher, timeout=600)
    [video] = [json.loads(line)["video"] for line in proc.seen if line.startswith("{") and '"rank": 0' in line
               and all(json.loads(line).get(k) == v for k, v in held.items())]
    folder = f".{Path(video).stem}.rollingdepth-work-*/{JOURNAL}"
    while not any('"stage": "snippets"' in j.read_text() for j in out.glob(folder)):  # held: on its way
        assert proc.poll() is None, "".join(proc.seen)[-3000:]
        time.sleep(0.01)
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*_run.json")}
    victim = rank_worker(proc, 0)  # rank 1 starts and ends ffmpeg processes meanwhile
    victim.send_signal(signal.SIGKILL)
    proc.wait(timeout=600)
    proc.drain.join(30)
    log = "".join(proc.seen)
    assert len(finished) < 4 and f"{Path(video).stem}_run.json" not in finished
    if restart == "elastic":
        assert proc.returncode == 0, log[-3000:]
    else:
        assert proc.returncode != 0
        assert work_folders(out)  # the interrupted shares' work is kept
        again = run_group([*launcher, "-m", "rollingdepth", *args, "-q"], 600, env=env)
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    reports = {p.name: json.loads(p.read_text()) for p in out.glob("*_run.json")}
    assert sorted(reports) == [f"v{i}_run.json" for i in range(4)]
    for name, mtime in finished.items():  # finished before the kill: not done again
        assert (out / name).stat().st_mtime_ns == mtime
    # 16 frames: 14 snippets at d=1, 8 at d=4, one per call; the killed video resumed after 4
    assert reports[f"{Path(video).stem}_run.json"]["counts"]["unet_calls"] <= 14 + 8 - 4
    assert not work_folders(out)
