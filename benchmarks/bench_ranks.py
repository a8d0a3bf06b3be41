"""One long video on one process and spread over torchrun ranks (CPU, gloo): wall time and equality.

    PYTHONPATH=. python benchmarks/bench_ranks.py --frames 240 --segment-frames 64 --res 64 --procs 1 2

Writes a synthetic clip (PNG frames, tests/conftest.py's moving pattern), runs ``run-video`` on
it with the tiny checkpoint (``--shots none``: one shot, in segments of ``--segment-frames``)
once without a launcher and once under ``torchrun --nproc-per-node P`` for each ``P > 1`` of
``--procs``, each with ``OMP_NUM_THREADS`` = cores / P (or ``--threads``), and prints the wall time of each, the
frames each rank ran (from ``{stem}_run.json``) and the largest difference from one process
(0 with the same threads per process; other thread counts sum in another order, ~1e-5).
On a CPU this says only that the work is split, not how a cluster of GPUs scales.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from common import REPO, TINY  # noqa: E402 (benchmarks/common.py puts the repository on the path)
from tests.conftest import make_clip  # noqa: E402


def run(folder: Path, out: Path, procs: int, args) -> float:
    """Seconds of one ``run-video`` (under torchrun when ``procs > 1``)."""
    command = ["-m", "rollingdepth", str(folder), "-c", str(TINY), "--res", str(args.res), "-d", "1,3", "--dtype", "fp32",
               "--no-save-sbs", "--cmap", "Greys_r", "--shots", "none", "--segment-frames", str(args.segment_frames),
               "-o", str(out), "-q"]
    if procs > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *command]
    threads = args.threads or max(1, args.cores // procs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *command], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--segment-frames", type=int, default=64)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=0, help="threads per process (0: cores / processes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clip"
        folder.mkdir()
        for i, frame in enumerate(make_clip(args.frames, 72, 128)):
            cv2.imwrite(str(folder / f"{i:04d}.png"), frame[..., ::-1])
        base = None
        for procs in args.procs:
            out = Path(tmp) / f"p{procs}"
            seconds = run(folder, out, procs, args)
            pred = np.load(out / "clip_pred.npy")
            report = json.loads((out / "clip_run.json").read_text())
            ranks: dict[int, int] = {}
            for u in report.get("units", []):
                ranks[u.get("rank", 0)] = ranks.get(u.get("rank", 0), 0) + u["frames"]
            base = pred if base is None else base
            print(f"{procs} process(es): {seconds:6.1f} s, {len(report.get('units', []))} units, frames per rank "
                  f"{dict(sorted(ranks.items()))}, max |difference| from the first {float(np.abs(pred - base).max()):.2e}")


if __name__ == "__main__":
    main()
