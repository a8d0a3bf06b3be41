"""The cost and fidelity of run-video's H.264 videos, per x264 preset and CRF.

For each setting, writes the side-by-side video and one colour video the way run-video does
(``VideoWriter``, ``side_by_side``, ``colorize``) and prints:

- ``cpu``: ffmpeg's CPU seconds (user + system of the child process), and wall seconds;
- ``sbs err``: mean absolute error (levels of 255) of the side-by-side's input half against the input;
- ``colour err``: the same for the colour video against ``colorize`` of the depth;
- ``small err``: the worst frame of the side-by-side's input half on the tests' 7-frame 24x32
  clip (``tests/conftest.make_clip(7, 24, 32, seed=1)`` written with the same setting and read
  back, as ``tests/test_run_video.py`` does; its tolerance is 4.0);
- the side-by-side file's size.

The depth is a smooth random field (noise at 1/8 resolution, upsampled) drifting a little per
frame. The input is bench_host's synthetic clip (written with ``medium`` at CRF 18 whatever
run-video's default, so that the figures stay comparable), or ``--input`` (any video).

    python benchmarks/bench_encoding.py                         # medium:18 and veryfast:14
    python benchmarks/bench_encoding.py --settings medium:18 veryfast:18 veryfast:16 veryfast:14
    python benchmarks/bench_encoding.py --input my.mp4 --frames 250
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, machine

sys.path.insert(0, str(REPO / "tests"))


def _child_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _decode(path: Path) -> np.ndarray:
    from rollingdepth.io.video_io import load_source

    return load_source(path).read()


def measure(speed: str, crf: int, frames: np.ndarray, depth: np.ndarray, small: np.ndarray, tmp: Path) -> dict:
    from rollingdepth.io.video_io import VideoWriter
    from rollingdepth.io.visualize import SBS_GAP, colorize, side_by_side

    n, h, w = frames.shape[:3]
    shade = lambda i: depth + 0.002 * i  # noqa: E731  the depth of frame i
    out = {}

    # the tests' small clip, written as the tests write it (same settings, 12 fps) and read
    # back: the worst frame of the side-by-side's input half against what was read
    sh, sw = small.shape[1:3]
    with VideoWriter(tmp / "small_input.mp4", 12, (sh, sw), quality=crf, speed=speed) as writer:
        for f in small:
            writer.write(f)
    small = _decode(tmp / "small_input.mp4")
    ramp = np.linspace(0, 1, sh * sw, dtype=np.float32).reshape(sh, sw)
    with VideoWriter(tmp / "small.mp4", 12, (sh, 2 * sw + SBS_GAP), quality=crf, speed=speed) as writer:
        for f in small:
            writer.write(side_by_side(f, colorize(ramp, "Spectral_r", 0, 1)))
    shown = _decode(tmp / "small.mp4")[:, :, :sw].astype(int)
    out["small err"] = np.abs(shown - small.astype(int)).mean(axis=(1, 2, 3)).max()

    cpu, wall = _child_cpu(), time.perf_counter()
    with VideoWriter(tmp / "sbs.mp4", 24, (h, 2 * w + SBS_GAP), quality=crf, speed=speed) as writer:
        for i, f in enumerate(frames):
            writer.write(side_by_side(f, colorize(shade(i), "Spectral_r", 0, 1.5)))
    out["sbs cpu"], out["sbs wall"] = _child_cpu() - cpu, time.perf_counter() - wall
    cpu, wall = _child_cpu(), time.perf_counter()
    with VideoWriter(tmp / "colour.mp4", 24, (h, w), quality=crf, speed=speed) as writer:
        for i in range(n):
            writer.write(colorize(shade(i), "Spectral_r", 0, 1.5))
    out["colour cpu"], out["colour wall"] = _child_cpu() - cpu, time.perf_counter() - wall

    every = max(1, n // 10)
    shown = _decode(tmp / "sbs.mp4")[::every, :, :w].astype(int)
    out["sbs err"] = np.abs(shown - frames[::every].astype(int)).mean()
    truth = np.stack([colorize(shade(i), "Spectral_r", 0, 1.5) for i in range(0, n, every)]).astype(int)
    out["colour err"] = np.abs(_decode(tmp / "colour.mp4")[::every].astype(int) - truth).mean()
    out["sbs MB"] = (tmp / "sbs.mp4").stat().st_size / 1e6
    return out


def main() -> None:
    import cv2

    from bench_host import make_clip
    from conftest import make_clip as small_clip

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=["medium:18", "veryfast:14"], help="x264 preset:CRF pairs")
    p.add_argument("--input", default=None, help="a video to use as the input (default: bench_host's synthetic clip)")
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--size", default="432x768", help="HxW of the synthetic clip")
    args = p.parse_args()
    settings = [(s.split(":")[0], int(s.split(":")[1])) for s in args.settings]
    print(machine())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.input is None:
            height, width = (int(v) for v in args.size.split("x"))
            make_clip(tmp / "input.mp4", args.frames, height, width, quality=18, speed="medium")  # fixed
            args.input = tmp / "input.mp4"
        frames = _decode(Path(args.input))[: args.frames]
        n, h, w = frames.shape[:3]
        rng = np.random.default_rng(0)
        depth = cv2.resize(rng.random((max(1, h // 8), max(1, w // 8))).astype(np.float32), (w, h))
        small = small_clip(7, 24, 32, seed=1)
        print(f"input {args.input}: {n} frames {h}x{w}")
        print(f"{'preset:crf':>14} {'sbs cpu':>8} {'wall':>6} {'colour cpu':>10} {'wall':>6} "
              f"{'sbs err':>8} {'colour err':>10} {'small err':>9} {'sbs MB':>7}")
        for speed, crf in settings:
            r = measure(speed, crf, frames, depth, small, tmp)
            print(f"{speed + ':' + str(crf):>14} {r['sbs cpu']:8.1f} {r['sbs wall']:6.1f} {r['colour cpu']:10.1f} "
                  f"{r['colour wall']:6.1f} {r['sbs err']:8.2f} {r['colour err']:10.2f} {r['small err']:9.2f} "
                  f"{r['sbs MB']:7.1f}", flush=True)


if __name__ == "__main__":
    main()
