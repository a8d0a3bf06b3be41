"""run-video under torchrun (gloo, CPU): sharding, exactly-once processing, gathered summary."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rollingdepth.distributed import balanced_shards

from .conftest import TINY_CHECKPOINT, make_clip
from .test_cli import write_clip

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


def test_torchrun_matches_single_process(tmp_path, five_clips):
    single = subprocess.run([sys.executable, "-m", "rollingdepth", five_clips, *ARGS, "-o", tmp_path / "single", "-q"],
                            env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "rollingdepth", five_clips, *ARGS, "-o", tmp_path / "multi"],
                           env=_env(), capture_output=True, text=True)
    assert multi.returncode == 0, multi.stderr[-3000:]
    ranks = {}
    for name in LENGTHS:
        a = (tmp_path / "single" / f"{name}_pred.npy").read_bytes()
        b = (tmp_path / "multi" / f"{name}_pred.npy").read_bytes()
        assert a == b, name
        report = json.loads((tmp_path / "multi" / f"{name}_run.json").read_text())
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


def test_corrupt_clip_fails_every_rank_others_complete(tmp_path, five_clips):
    folder = tmp_path / "clips"
    folder.mkdir()
    for p in five_clips.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "c9_broken.mp4").write_bytes(b"\x00" * 2048)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "rollingdepth", folder, *ARGS, "-o", tmp_path / "out"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], outputs
    for name in LENGTHS:
        assert (tmp_path / "out" / f"{name}_run.json").exists()
    assert not list((tmp_path / "out").glob("c9_broken*"))
    summary = " ".join(outputs[0][0].split())
    assert "c9_broken.mp4" in summary and "not a readable video" in summary
    assert outputs[1][0] == ""  # only rank 0 prints the summary
