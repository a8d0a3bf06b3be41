"""Where the side-by-side's RGB frames should come from: decoding the input again, or frames the
run kept from its own decode (#42, item 5: "when that is cheaper than reading the input again").

The side-by-side needs each input
frame at the output size after the run. Two ways to have it:

- **re-read** (what run-video does): decode the input again (PyAV, ``VideoSource.frames``) and
  resize each frame to the output size;
- **keep**: while the run decodes for the encoder, write each frame, resized, to a uint8 file
  ``[N, H, W, 3]`` on the work folder's disk, and read it back for the side-by-side.

Makes a 10-second 1080p H.264 clip (240 frames, ``testsrc2``, B-frames) with the bundled ffmpeg
and prints, per frame: the re-read's time, the keep's extra write during the run plus its read
afterwards, and the disk each costs (the keep: ``H * W * 3`` bytes per frame for the whole
video, held until its outputs are written).

    python benchmarks/bench_sbs_source.py
    python benchmarks/bench_sbs_source.py --size 432 768 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_decode import make_short  # noqa: E402


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def reread_seconds(path: Path, size: tuple[int, int]) -> tuple[float, int]:
    """Decode the clip again and resize each frame: seconds, frames."""
    from rollingdepth.io.video_io import probe_video

    started, count = time.perf_counter(), 0
    for frame in probe_video(path).frames(0):
        _resized(frame, size)
        count += 1
    return time.perf_counter() - started, count


def keep_seconds(frames: list[np.ndarray], folder: Path) -> tuple[float, float]:
    """Write the resized frames to a uint8 file as a run would while encoding, then read them
    back in order: seconds of each (the file flushed and dropped from the page cache between)."""
    path = folder / "kept_rgb.u8"
    shape = (len(frames), *frames[0].shape)
    started = time.perf_counter()
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    for i, f in enumerate(frames):
        out[i] = f
    out.flush()
    del out
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    written = time.perf_counter() - started
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read from disk, not from memory
    os.close(fd)
    started = time.perf_counter()
    kept = np.load(path, mmap_mode="r")
    total = 0
    for i in range(len(kept)):
        total += int(np.asarray(kept[i])[0, 0, 0])
    read = time.perf_counter() - started
    path.unlink()
    return written, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(432, 768), metavar=("H", "W"),
                        help="the output size of the side-by-side's frames (default: --res 768 of 1080p)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = tuple(args.size)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; size {size[1]}x{size[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_short(Path(tmp))
        reread = min(reread_seconds(clip, size)[0] for _ in range(args.repeat))
        from rollingdepth.io.video_io import probe_video

        frames = [_resized(f, size) for f in probe_video(clip).frames(0)]
        keep = [keep_seconds(frames, Path(tmp)) for _ in range(args.repeat)]
        write, read = min(k[0] for k in keep), min(k[1] for k in keep)
    n = len(frames)
    per = size[0] * size[1] * 3
    print(f"re-read: {1000 * reread / n:.2f} ms per frame (decode 1080p and resize), no disk")
    print(f"keep: {1000 * write / n:.2f} ms per frame written during the run + {1000 * read / n:.2f} ms read "
          f"afterwards; disk {per / 1e6:.2f} MB per frame ({per * 172800 / 1e9:.0f} GB for a 2-hour film at 24 fps)")


if __name__ == "__main__":
    main()
