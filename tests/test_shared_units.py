"""One video's units spread over torchrun ranks (rollingdepth/runtime/shared_units.py), on CPU
with gloo: the same prediction as one process, the frames shared out, a killed rank resumed
without redoing a unit, two "nodes" on one machine.

The model is the stand-in of :mod:`tests.stand_ins` (its frames carry their own number, so each
rank's units see the video's true frames). Every child process starts in its own process group,
killed in a ``finally``: nothing is left running when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from rollingdepth.frontends import run_video as cli
from rollingdepth.method.settings import MethodSettings
from rollingdepth.runtime.plan import largest_span, plan_units
from rollingdepth.runtime.shared_units import unit_owners

from .conftest import (
    HELD_CHILD,
    TINY_CHECKPOINT,
    held_run,
    kill_group,
    rank_worker,
    run_group,
)
from .stand_ins import frames_with_ids, save_stand_in_checkpoint

REPO = Path(__file__).resolve().parent.parent
FRAMES, SIZE = 48, (32, 48)
CUTS = [16, 24]  # shots of 16, 8 and 24 frames; with --segment-frames 12: 2 segments, 1, 3
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The stand-in checkpoint, the clip as PNGs, a cut list."""
    root = tmp_path_factory.mktemp("spread")
    checkpoint = save_stand_in_checkpoint(root / "checkpoint", TINY_CHECKPOINT)
    folder = root / "clip"
    folder.mkdir()
    for i, frame in enumerate(frames_with_ids(FRAMES, *SIZE)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    cuts = root / "cuts.txt"
    cuts.write_text("\n".join(map(str, CUTS)) + "\n")
    return {"checkpoint": checkpoint, "clip": folder, "cuts": cuts, "root": root}


def args_for(setup, out: Path, *extra) -> list[str]:
    return [str(setup["clip"]), "-c", str(setup["checkpoint"]), "--res", "0", "-d", "1,10", "--snippet-lengths", "3",
            "--dtype", "fp32", "--no-save-sbs", "--cmap", "Greys_r", "--shots", str(setup["cuts"]),
            "--segment-frames", "12", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def one_process(setup):
    """The prediction of one process (no launcher)."""
    out = setup["root"] / "one"
    with pytest.raises(SystemExit) as info:
        cli.main(args_for(setup, out, "-q"))
    assert info.value.code == 0
    return np.load(out / "clip_pred.npy")


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200",
               HELD_RUN_IMPORTS="tests.stand_ins", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("WORLD_SIZE", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NEVER = '{"event": "never"}'  # tests/held_child.py holds at no event: run-video that loads the stand-in


def _torchrun(*options) -> list:
    return [sys.executable, "-m", "torch.distributed.run", *options]


def _rank_pid(proc, rank: int) -> int:
    """The pid of torchrun's worker of ``rank`` (``proc``: the launcher)."""
    return rank_worker(proc, rank).pid


def _units_per_rank(report: dict) -> dict[int, int]:
    frames: dict[int, int] = {}
    for u in report["units"]:
        frames[u["rank"]] = frames.get(u["rank"], 0) + u["frames"]
    return frames


def _run_units():
    """The units run-video plans for ``args_for``'s run: overlaps of three times the span of
    dilation 10 capped to 12 frames (3: 7 frames), at most half a segment (6)."""
    settings = MethodSettings(dilations=[1, 10], snippet_lengths=[3]).validate()
    return plan_units([(0, 16), (16, 8), (24, 24)], 12, largest_span(settings, 12))


def test_units_balanced_by_frames():
    """The plan: 6 units (10, 10 | 8 | 10, 10, 10 frames); each rank gets about half the frames,
    the same on every call."""
    units = plan_units([(0, 16), (16, 8), (24, 24)], 12)
    assert [u.count for u in units] == [10, 10, 8, 10, 10, 10]
    owners = unit_owners(units, 2)
    assert owners == unit_owners(units, 2) and set(owners) == {0, 1}
    loads = [sum(u.count for u, r in zip(units, owners) if r == rank) for rank in (0, 1)]
    assert sorted(loads) == [28, 30]
    assert unit_owners(units, 1) == [0] * 6 and sorted(set(unit_owners(units, 8))) == list(range(6))


def test_torchrun_spreads_one_video_like_one_process(setup, one_process, tmp_path):
    """torchrun --nproc-per-node 2: the same prediction as one process (bit for bit), each rank
    did about half the frames (run.json), rank 0 told of each unit the other rank finished."""
    out = tmp_path / "two"
    done = run_group(_torchrun("--standalone", "--nproc-per-node", "2", HELD_CHILD, NEVER, *args_for(setup, out)),
                     300, cwd=REPO, env=_env())
    stdout, stderr = done.stdout, done.stderr
    assert done.returncode == 0, stderr[-3000:]
    np.testing.assert_array_equal(np.load(out / "clip_pred.npy"), one_process)
    report = json.loads((out / "clip_run.json").read_text())
    assert sorted(u["index"] for u in report["units"]) == list(range(6))  # each unit once
    frames = _units_per_rank(report)
    assert set(frames) == {0, 1} and all(0.4 <= f / sum(frames.values()) <= 0.6 for f in frames.values()), frames
    others = [u for u in report["units"] if u["rank"] == 1]
    for u in others:
        assert f"unit {u['index'] + 1} (shot {u['shot'] + 1}, frames {u['first']}-" in stdout + stderr
    assert stdout.count("run-video summary") == 1
    assert not [p for p in out.iterdir() if ".rollingdepth-work-" in p.name]  # the work folder is gone


def _journal_units(path: Path) -> list[int]:
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break
        if entry["stage"] == "unit":
            found.append(entry["state"]["report"]["index"])
    return found


def _held_torchrun(setup, out: Path, where: dict):
    """torchrun (2 ranks, --max-restarts 1) with rank 0 held at ``where``, in its first round."""
    launcher = _torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1")
    return held_run(args_for(setup, out), where, cwd=REPO, env=_env(), launcher=launcher)


def _after_restart(proc) -> list[dict]:
    """The launcher's exit, then rank 0's events after it was held (so: after the restart)."""
    proc.wait(timeout=300)
    proc.drain.join(timeout=60)
    lines = proc.seen[proc.seen.index("HELD\n") + 1 :]
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_killed_rank_resumes_its_unit_and_redoes_none(setup, one_process, tmp_path):
    """Rank 0 held mid-unit (the merge of its second unit, once rank 1 finished all of its own)
    and killed with SIGKILL; torchrun --max-restarts 1 restarts both ranks: exit 0, the same
    prediction, every unit done once (run.json: units finished before the kill have round 0),
    rank 0's first unit not started again, its held unit resumed after its snippets."""
    units = _run_units()
    owners = unit_owners(units, 2)
    rank0 = [u for u, r in zip(units, owners) if r == 0]
    held = rank0[1]
    out = tmp_path / "out"
    proc = _held_torchrun(setup, out, {"stage": "merge", "phase": "start", "shot": held.shot + 1,
                                       "segment": held.segment + 1})
    [work] = [p for p in out.iterdir() if ".rollingdepth-work-" in p.name]
    mine1 = [u.index for u, r in zip(units, owners) if r == 1]
    deadline = time.monotonic() + 120
    while sorted(_journal_units(work / "ranks2_1" / "journal.jsonl")) != mine1:  # rank 1 reports its units done
        assert time.monotonic() < deadline, "rank 1 did not finish its units"
        time.sleep(0.1)
    done0 = _journal_units(work / "ranks2_0" / "journal.jsonl")
    assert done0 == [rank0[0].index]
    os.kill(_rank_pid(proc, 0), signal.SIGKILL)
    after = _after_restart(proc)
    assert proc.returncode == 0, "".join(proc.seen)[-3000:]
    np.testing.assert_array_equal(np.load(out / "clip_pred.npy"), one_process)
    report = json.loads((out / "clip_run.json").read_text())
    rounds = {u["index"]: (u["rank"], u["round"]) for u in report["units"]}
    assert sorted(rounds) == list(range(6))
    for i in mine1 + done0:  # finished before the kill: not done again after the restart
        assert rounds[i] == (owners[i], 0), (i, rounds[i])
    assert rounds[held.index] == (0, 1)
    stages = [e for e in after if e.get("event") == "stage" and e.get("shot")]
    first = rank0[0]
    assert not [e for e in stages if (e["shot"], e.get("segment")) == (first.shot + 1, first.segment + 1)]
    again = [e["stage"] for e in stages if (e["shot"], e.get("segment")) == (held.shot + 1, held.segment + 1)]
    assert "merge" in again and "snippets" not in again, again  # resumed from its checkpoints


def test_killed_while_writing_the_outputs_predicts_nothing_again(setup, one_process, tmp_path):
    """Rank 0 killed once the shots are recorded, as its outputs start: after the restart no rank
    runs a unit again, and rank 0 writes the outputs from the rows every rank wrote."""
    out = tmp_path / "out"
    proc = _held_torchrun(setup, out, {"stage": "write", "phase": "start"})
    os.kill(_rank_pid(proc, 0), signal.SIGKILL)
    after = _after_restart(proc)
    assert proc.returncode == 0, "".join(proc.seen)[-3000:]
    np.testing.assert_array_equal(np.load(out / "clip_pred.npy"), one_process)
    assert [e for e in after if e.get("event") == "stage" and e["stage"] == "write"]
    assert not [e for e in after if e.get("event") == "stage" and e.get("shot")]  # no unit ran again
    report = json.loads((out / "clip_run.json").read_text())
    assert sorted(u["index"] for u in report["units"]) == list(range(6)) and {u["round"] for u in report["units"]} == {0}


def test_a_rank_that_fails_fails_the_video_on_every_rank(setup, tmp_path):
    """The model fails on rank 1: no rank waits for it for ever; the video is reported failed once,
    naming the rank, both ranks exit non-zero, and no output is left."""
    out = tmp_path / "out"
    done = run_group(_torchrun("--standalone", "--nproc-per-node", "2", HELD_CHILD, NEVER, *args_for(setup, out)),
                     300, cwd=REPO, env=_env(STAND_IN_FAIL_ON_RANK="1"))
    assert done.returncode != 0
    summary = " ".join(done.stdout.split())
    assert done.stdout.count("run-video summary") == 1 and "rank 1: RuntimeError: the stand-in fails on rank 1" in summary
    assert not (out / "clip_pred.npy").exists() and not (out / "clip_run.json").exists()


def test_two_nodes_on_one_machine(setup, one_process, tmp_path):
    """--nnodes 2: two launchers (one process each, as two machines would run them, the output
    folder shared), gloo on CPU: the same prediction as one process, both did units."""
    out = tmp_path / "nodes"
    port = _free_port()
    procs = []
    try:
        for node in (0, 1):
            command = _torchrun("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1", "--master-addr",
                                "127.0.0.1", "--master-port", str(port), HELD_CHILD, NEVER, *args_for(setup, out))
            procs.append(subprocess.Popen([str(c) for c in command], cwd=REPO, env=_env(), start_new_session=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for proc in procs:
            kill_group(proc)
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    np.testing.assert_array_equal(np.load(out / "clip_pred.npy"), one_process)
    report = json.loads((out / "clip_run.json").read_text())
    assert set(_units_per_rank(report)) == {0, 1} and report["world_size"] == 2
