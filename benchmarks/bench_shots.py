"""Cut detection measured on the synthetic clips of tests/shot_clips.py: ours against PySceneDetect.

    PYTHONPATH=. python benchmarks/bench_shots.py                 # ours only
    PYTHONPATH=.:/path/to/scenedetect python benchmarks/bench_shots.py  # and PySceneDetect's

PySceneDetect (``scenedetect`` 0.7.2) requires ``opencv-python``, which must not sit next to our
``opencv-python-headless``; install it with ``pip install --no-deps scenedetect==0.7.2`` (or put
its unpacked wheel on PYTHONPATH) and ``pip install platformdirs``. It gets BGR frames, one
``process_frame`` call each, with ``min_scene_len=1`` so that short shots can be found.
Prints one row per clip (the first clips, then #43's: held pictures, long flashes, the dark,
letterboxes): the true cuts and each detector's, marked ok or wrong; then how many clips each
gets right with Gaussian noise added.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rollingdepth.io.shots import detect_cuts
from tests.shot_clips import CLIPS, HARD_CLIPS

FPS = 24.0
NOISE = (2, 4, 8)  # grey levels


def scenedetect_cuts(detector, frames) -> list[int]:
    """Cuts found by a PySceneDetect detector fed the frames one by one."""
    from scenedetect import FrameTimecode

    found = []
    for i, frame in enumerate(frames):
        found += detector.process_frame(FrameTimecode(i, fps=FPS), frame[..., ::-1].copy())
    found += detector.post_process(FrameTimecode(len(frames) - 1, fps=FPS))
    return sorted(int(tc.frame_num) for tc in found)


def detectors() -> dict:
    out = {"ours": lambda frames: detect_cuts(iter(frames))}
    try:
        from scenedetect import AdaptiveDetector, ContentDetector
    except ImportError as err:
        print(f"(PySceneDetect not measured: {err})")
        return out
    out["ContentDetector"] = lambda f: scenedetect_cuts(ContentDetector(min_scene_len=1), f)
    out["AdaptiveDetector"] = lambda f: scenedetect_cuts(AdaptiveDetector(min_scene_len=1), f)
    return out


def noisy(frames, sd: float, seed: int = 1):
    """The frames with Gaussian noise of ``sd`` grey levels (the clips are 64 wide, so the
    detectors' downscaling averages none of it away, unlike at real sizes)."""
    rng = np.random.default_rng(seed)
    return np.clip(frames.astype(np.float32) + rng.normal(0.0, sd, frames.shape), 0, 255).astype(np.uint8)


def noise_rows(dets: dict, clips: dict) -> None:
    """How many clips each detector gets right with noise added."""
    for sd in NOISE:
        counts = [sum(fn(noisy(frames, sd)) == truth for frames, truth in clips.values()) for fn in dets.values()]
        print(f"| clips right, noise sd {sd} | | | {' | '.join(f'{c}/{len(clips)}' for c in counts)} |")


def main() -> None:
    dets = detectors()
    print(f"| clip | frames | true cuts | {' | '.join(dets)} |")
    print("|---|---|---|" + "---|" * len(dets))
    right = dict.fromkeys(dets, 0)
    seconds = dict.fromkeys(dets, 0.0)
    clips = {name: make() for name, make in {**CLIPS, **HARD_CLIPS}.items()}
    for name, (frames, truth) in clips.items():
        cells = []
        for det, fn in dets.items():
            start = time.perf_counter()
            cuts = fn(frames)
            seconds[det] += time.perf_counter() - start
            right[det] += cuts == truth
            cells.append(f"{cuts} {'ok' if cuts == truth else 'WRONG'}")
        cells = [c if len(c) < 60 else f"{len(c.split(','))} cuts WRONG" for c in cells]
        print(f"| {name} | {len(frames)} | {truth} | {' | '.join(cells)} |")
    total = sum(len(f) for f, _ in clips.values())
    print(f"| clips right | | | {' | '.join(f'{right[d]}/{len(clips)}' for d in dets)} |")
    print(f"| ms per frame | | | {' | '.join(f'{1000 * seconds[d] / total:.2f}' for d in dets)} |")
    noise_rows(dets, clips)


if __name__ == "__main__":
    main()
