"""run-video and eval-depth under torchrun (gloo, CPU): sharding, exactly-once processing,
gathered summary, the scores of one process. Every launch runs in a process group of its own,
killed when it times out (tests/conftest.py: run_group)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rollingdepth.runtime.distributed import balanced_shards

from .conftest import TINY_CHECKPOINT, kill_group, make_clip, run_group
from .test_run_video import REPO, write_clip

ARGS = ["-c", str(TINY_CHECKPOINT), "--res", "32", "-d", "1,3", "--dtype", "fp32", "--no-save-sbs", "--cmap", "Greys_r"]
LENGTHS = {"c1": 3, "c2": 9, "c3": 5, "c4": 12, "c5": 7}


def test_balanced_shards_cover_everything_once():
    weights = [300, 10, 10, 10, 250, 40, 1, 0]
    for world in (1, 2, 3, 5, 10):
        shards = balanced_shards(weights, world)
        flat = sorted(i for s in shards for i in s)
        assert flat == list(range(len(weights)))
        assert balanced_shards(weights, world) == shards  # deterministic
    loads = [sum(weights[i] for i in s) for s in balanced_shards(weights, 2)]
    assert max(loads) - min(loads) <= 40  # long clips spread, not file counts


@pytest.fixture(scope="module")
def five_clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("five")
    for i, (name, n) in enumerate(LENGTHS.items()):
        write_clip(folder / f"{name}.mp4", make_clip(n, 24, 32, seed=i))
    return folder


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("WORLD_SIZE", None)
    return env


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _torchrun(clips, out, *extra):
    return run_group([*TORCHRUN, "-m", "rollingdepth", clips, *ARGS, "-o", out, *extra], 600, env=_env(), cwd=REPO)


@pytest.fixture(scope="module")
def torchrun_outputs(tmp_path_factory, five_clips):
    """One torchrun (2 processes) over the five clips: (output folder, completed process)."""
    out = tmp_path_factory.mktemp("multi")
    return out, _torchrun(five_clips, out)


def test_torchrun_matches_single_process(tmp_path, five_clips, torchrun_outputs):
    single = run_group([sys.executable, "-m", "rollingdepth", five_clips, *ARGS, "-o", tmp_path / "single", "-q"],
                       600, env=_env())
    assert single.returncode == 0, single.stderr
    multi_dir, multi = torchrun_outputs
    assert multi.returncode == 0, multi.stderr[-3000:]
    ranks = {}
    for name in LENGTHS:
        a = (tmp_path / "single" / f"{name}_pred.npy").read_bytes()
        b = (multi_dir / f"{name}_pred.npy").read_bytes()
        assert a == b, name
        report = json.loads((multi_dir / f"{name}_run.json").read_text())
        assert report["world_size"] == 2
        ranks[name] = report["rank"]
    # each clip went to exactly the rank the balanced sharding gives it
    names = sorted(LENGTHS)
    expected = balanced_shards([LENGTHS[n] for n in names], 2)
    assert {n: r for r, shard in enumerate(expected) for n in (names[i] for i in shard)} == ranks
    assert set(ranks.values()) == {0, 1}
    # one summary, from rank 0, listing all five
    assert multi.stdout.count("run-video summary") == 1
    for name in LENGTHS:
        assert multi.stdout.count(f"{name}.mp4") == 1, multi.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(args, logs: Path, timeout: float = 600) -> list[tuple[int, str, str]]:
    """``args`` (a command after ``python``) as ranks 0 and 1 of one gloo group, started by hand
    (each rank's exit code seen apart; their output goes to files in ``logs``, so that neither
    waits on a full pipe): (exit code, stdout, stderr) of each. Both are killed, with whatever
    they started, when they time out."""
    import time

    port, procs = _free_port(), []
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for rank in range(2):
            env = dict(_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            with open(logs / f"{rank}.out", "w") as out, open(logs / f"{rank}.err", "w") as err:
                procs.append(subprocess.Popen([sys.executable, *map(str, args)], env=env, stdout=out, stderr=err,
                                              text=True, start_new_session=True))
        deadline = time.monotonic() + timeout
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            kill_group(p)
    return [(p.returncode, (logs / f"{r}.out").read_text(), (logs / f"{r}.err").read_text())
            for r, p in enumerate(procs)]


def test_corrupt_clip_fails_every_rank_others_complete(tmp_path, five_clips):
    folder = tmp_path / "clips"
    folder.mkdir()
    for p in five_clips.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "c9_broken.mp4").write_bytes(b"\x00" * 2048)
    outputs = _two_ranks(["-m", "rollingdepth", folder, *ARGS, "-o", tmp_path / "out"], tmp_path / "logs")
    assert [code for code, _, _ in outputs] == [1, 1], outputs
    for name in LENGTHS:
        assert (tmp_path / "out" / f"{name}_run.json").exists()
    assert not list((tmp_path / "out").glob("c9_broken*"))
    summary = " ".join(outputs[0][1].split())
    assert "c9_broken.mp4" in summary and "not a readable video" in summary
    assert outputs[1][1] == ""  # only rank 0 prints the summary


def test_skip_existing_across_ranks(tmp_path, five_clips, torchrun_outputs):
    """A distributed batch resumes like a single one: after one clip of each rank lost its
    report, torchrun --skip-existing redoes exactly those two (each once, by the rank the
    sharding gives it), leaves the other three untouched and reports them skipped."""
    import shutil

    multi_dir, first = torchrun_outputs
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "out"
    shutil.copytree(multi_dir, out)
    names = sorted(LENGTHS)
    shards = balanced_shards([LENGTHS[n] for n in names], 2)
    redo = {names[shards[0][0]], names[shards[1][0]]}  # one clip of each rank
    for name in redo:
        (out / f"{name}_run.json").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = _torchrun(five_clips, out, "--skip-existing")
    assert again.returncode == 0, again.stderr[-3000:]
    for name in names:
        report = json.loads((out / f"{name}_run.json").read_text())
        changed = [f for f in stamps if f.startswith(f"{name}_") and (out / f).stat().st_mtime_ns != stamps[f]]
        if name in redo:
            assert changed and report["rank"] == next(r for r, s in enumerate(shards) if names.index(name) in s)
        else:
            assert changed == [], name  # skipped: not even rewritten
    summary = [line for line in again.stdout.splitlines() if ".mp4" in line]
    assert again.stdout.count("run-video summary") == 1
    for name in names:
        rows = [line for line in summary if f"{name}.mp4" in line]
        assert len(rows) == 1, again.stdout
        assert ("skipped" in rows[0]) == (name not in redo), rows[0]


def test_each_rank_takes_the_gpu_of_its_local_rank(monkeypatch):
    """LOCAL_RANK picks the CUDA device (modulo the devices present); an explicit device or a
    machine without CUDA keeps what was asked; without a launcher nothing changes."""
    import torch
    import torch.distributed as dist

    from rollingdepth.runtime.distributed import init_distributed

    joined = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: joined.append((backend, kw["rank"], kw["world_size"])))
    # the launcher's store, then one namespace per elastic round (its use: test_resume.py)
    monkeypatch.setattr(dist, "rendezvous", lambda url, rank, world, timeout: iter([("store", rank, world)]))
    monkeypatch.setattr(dist, "PrefixStore", lambda prefix, store: (prefix, store))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    # two machines with 4 GPUs, 2 processes each: the global rank would pick the wrong GPU;
    # last: more local processes than GPUs share them round-robin
    for devices, rank, local_rank, want in ((4, 2, 0, "cuda:0"), (4, 3, 1, "cuda:1"), (4, 1, 1, "cuda:1"),
                                            (2, 0, 3, "cuda:1")):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        ctx = init_distributed()
        assert (ctx.rank, ctx.local_rank, ctx.world_size) == (rank, local_rank, 4)
        assert joined[-1] == ("gloo", rank, 4)
        for requested in (None, "auto", "cuda"):
            assert ctx.device(requested) == want, (requested, local_rank)
        assert ctx.device("cuda:1") == "cuda:1" and ctx.device("cpu") == "cpu"  # asked for explicitly
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ctx.device(None) is None and ctx.device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "3")
    plain = init_distributed()
    assert not plain.enabled and plain.device(None) is None  # one process: the usual choice


BONN = ("rgbd_bonn_balloon2", "rgbd_bonn_crowd2", "rgbd_bonn_crowd3")
BONN_LENGTHS = (2, 5, 3)  # frames of each sequence: rank 0 gets crowd2, rank 1 the other two


def _bonn(folder: Path) -> list:
    """Three Bonn sequences of 2, 5 and 3 tiny frames: eval-depth's arguments for them."""
    from .test_datasets import make_bonn

    make_bonn(folder / "bonn", folder / "split", names=BONN, frames=2)
    for name, extra in zip(BONN, (n - 2 for n in BONN_LENGTHS)):  # a split may list a frame twice
        rows = (folder / "split" / f"{name}.csv").read_text().splitlines()
        (folder / "split" / f"{name}.csv").write_text("\n".join(rows + rows[1:2] * extra) + "\n")
    return ["--dataset", "bonn", "--root", folder / "bonn", "--split", folder / "split", "-c", TINY_CHECKPOINT,
            "-p", "none", "--res", "32", "-d", "1", "--dtype", "fp32"]


def _predicted(log: str) -> list[str]:
    """The sequences a log says were predicted (rank 0 logs its progress under torchrun)."""
    return [name for name in BONN if f"{name}: {BONN_LENGTHS[BONN.index(name)]} frames predicted" in log]


def test_eval_depth_dataset_under_torchrun_scores_as_one_process(tmp_path):
    """eval-depth --dataset under torchrun (2 processes): rank 0 predicts the share the
    balanced sharding gives it, every sequence is predicted once, the predictions are one
    process's, bit for bit, and rank 0's scores and tables are one process's."""
    args = _bonn(tmp_path)
    eval_depth = ["-m", "rollingdepth.frontends.eval_depth"]
    single = run_group([sys.executable, *eval_depth, *args, "-o", tmp_path / "single"], 600, env=_env(), cwd=REPO)
    assert single.returncode == 0, single.stderr[-3000:]
    assert _predicted(single.stderr) == list(BONN)
    multi = run_group([*TORCHRUN, *eval_depth, *args, "-o", tmp_path / "multi"], 600, env=_env(), cwd=REPO)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "2 processes: 3 sequences" in multi.stderr
    assert _predicted(multi.stderr) == [BONN[i] for i in balanced_shards(list(BONN_LENGTHS), 2)[0]] == [BONN[1]]
    assert "3 videos, 3 done, 0 failed" in multi.stderr  # rank 1's share counted too
    for name in BONN:
        pred = f"predictions/{name}_pred.npy"
        assert (tmp_path / "multi" / pred).read_bytes() == (tmp_path / "single" / pred).read_bytes(), name
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("single", "multi")]
    assert metrics[0]["mean"] == metrics[1]["mean"] and metrics[0]["sequences"] == metrics[1]["sequences"]
    assert sorted(metrics[1]["sequences"]) == sorted(BONN) and not metrics[1]["failed"]
    for table in ("metrics.csv", "table.csv"):
        assert (tmp_path / "multi" / table).read_text() == (tmp_path / "single" / table).read_text(), table
    assert multi.stdout.count("eval-depth: Bonn") == 1  # one table, printed by rank 0


def test_eval_depth_sequence_failed_on_one_rank_fails_every_rank(tmp_path):
    """A sequence that fails on rank 1 (a frame missing): rank 1 prints its error; the failure
    reaches rank 0 (gathered), which counts it, lists it in the reports, scores the other two
    and exits 1, like rank 1."""
    args = _bonn(tmp_path)
    next((tmp_path / "bonn" / "rgbd_bonn_crowd3" / "rgb").iterdir()).unlink()  # in rank 1's share
    outputs = _two_ranks(["-m", "rollingdepth.frontends.eval_depth", *args, "-o", tmp_path / "eval"], tmp_path / "logs")
    assert [code for code, _, _ in outputs] == [1, 1], outputs
    (_, out0, err0), (_, out1, err1) = outputs
    assert "Traceback" not in err0 + err1, (err0, err1)
    error = [line for line in err1.splitlines() if line.startswith("Error: [rank 1]")]
    assert len(error) == 1 and "rgbd_bonn_crowd3" in error[0] and "no such frame" in error[0], err1
    assert "3 videos, 2 done, 1 failed" in err0 and "rgbd_bonn_crowd2: 5 frames predicted" in err0, err0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert sorted(metrics["sequences"]) == ["rgbd_bonn_balloon2", "rgbd_bonn_crowd2"], metrics
    assert list(metrics["failed"]) == ["rgbd_bonn_crowd3"] and "no such frame" in metrics["failed"]["rgbd_bonn_crowd3"]
    assert "| rgbd_bonn_crowd3 | - | failed: " in (tmp_path / "eval" / "table.md").read_text()
    assert "eval-depth: Bonn" in out0 and out1 == ""  # only rank 0 scores
