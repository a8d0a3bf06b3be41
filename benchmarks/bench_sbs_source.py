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

``--write-stage N`` measures what run-video does now (``rollingdepth.runtime.kept_frames``) on a
1080p clip of N frames (120: 746 MB kept, within the 1 GiB budget): the run's decode with and
without keeping the frames on the way, then run-video's write stage (``outputs.feed`` with the
side-by-side's writer at 768x432, and with ``--stereo`` the half-SBS stereo video's too) fed the
input decoded again or the kept frames (in the page cache as the run left them, or, with
``--cold``, read from the disk).

    python benchmarks/bench_sbs_source.py --write-stage 120
    python benchmarks/bench_sbs_source.py --write-stage 120 --stereo --cold
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


def write_stage_seconds(clip: Path, pred_path: Path, frames: int, kept, out_dir: Path, stereo: bool) -> float:
    """run-video's write stage (``outputs.feed``) of the side-by-side (and the half-SBS stereo video)
    fed the input decoded again (``kept`` None) or the kept frames: seconds."""
    import contextlib

    from benchmarks.bench_stereo import PRED_SIZE
    from rollingdepth.io.exports import DepthMapping, VideoMapping
    from rollingdepth.io.output_formats import VideoOutput, output_format
    from rollingdepth.io.video_io import probe_video
    from rollingdepth.runtime.outputs import FrameFeed, feed
    from rollingdepth.runtime.run_config import RunConfig

    source, pred = probe_video(clip), np.load(pred_path, mmap_mode="r")
    cfg = RunConfig.build(None, dict(save_stereo=["half-sbs"] if stereo else []))
    mapping = VideoMapping((DepthMapping("inverse", 0.0, 3.0),))
    out = VideoOutput(out_dir=out_dir, stem="clip", settings=cfg, frames=frames, size=PRED_SIZE,
                      input_size=tuple(source.size), prediction_range=(0.0, 3.0), mapping=mapping, fps=source.rate,
                      sound=lambda: None, prediction_file=lambda: pred_path, snippet_maps=lambda: [], run_settings={})
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = [w for fmt in ("sbs", "stereo")[: 1 + stereo] for w in output_format(fmt).open(out, stack)]
        images = kept.read(frames) if kept is not None else source.frames(0, frames)
        predictions = (np.asarray(pred[i]) for i in range(frames))
        feed(writers, FrameFeed(predictions, mapping, PRED_SIZE, images, str(clip), frames), stack,
             lambda *a: None, frames * len(writers))
    return time.perf_counter() - started


def keep_during_run(clip: Path, folder: Path, frames: int, cold: bool):
    """The run's decode of the clip, plain and through ``KeptFrames``: (seconds, seconds, the kept frames)."""
    from rollingdepth.io.video_io import probe_video
    from rollingdepth.runtime.kept_frames import KEEP_FILE, KeptFrames

    source = probe_video(clip)
    started = time.perf_counter()
    for _ in source.frames(0, frames):
        pass
    plain = time.perf_counter() - started
    kept = KeptFrames(folder / KEEP_FILE, tuple(source.size), frames)
    started = time.perf_counter()
    for _ in kept.wrap(source.frames(0, frames)):
        pass
    keeping = time.perf_counter() - started
    if cold:  # written to the disk and dropped from the page cache: read back from the disk
        fd = os.open(kept.path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    return plain, keeping, kept


def write_stage_main(frames: int, stereo: bool, cold: bool, repeat: int) -> None:
    """``--write-stage``: the decode with and without keeping, then the write stage both ways, per
    frame (best of ``repeat`` each, the two ways taken in turn)."""
    from benchmarks.bench_stereo import make_inputs, make_prediction

    times = {"plain": [], "keeping": [], "kept": [], "reread": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip, pred = make_inputs(folder, frames), make_prediction(folder / "pred.npy", frames)
        for r in range(repeat):
            plain, keeping, kept = keep_during_run(clip, folder, frames, cold)
            (folder / f"kept{r}").mkdir()
            with_kept = write_stage_seconds(clip, pred, frames, kept, folder / f"kept{r}", stereo)
            (folder / f"read{r}").mkdir()
            again = write_stage_seconds(clip, pred, frames, None, folder / f"read{r}", stereo)
            for key, seconds in zip(times, (plain, keeping, with_kept, again)):
                times[key].append(seconds)
    plain, keeping, with_kept, reread = (min(t) for t in times.values())
    ms = lambda seconds: f"{1000 * seconds / frames:.1f} ms"  # noqa: E731
    what = "side-by-side" + (" + half-SBS stereo" if stereo else "")
    print(f"{frames} frames of 1080p, {frames * 1920 * 1080 * 3 / 1e6:.0f} MB kept; write stage: {what}")
    print(f"the run's decode: {ms(plain)} per frame, {ms(keeping)} keeping them (+{ms(keeping - plain)})")
    print(f"write stage: {ms(reread)} per frame decoding again, {ms(with_kept)} from the kept frames "
          f"({'from the disk' if cold else 'in the page cache'}): {reread:.2f} s vs {with_kept:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(432, 768), metavar=("H", "W"),
                        help="the output size of the side-by-side's frames (default: --res 768 of 1080p)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-stage", type=int, default=0, metavar="N",
                        help="measure the write stage with and without kept frames on a 1080p clip of N frames")
    parser.add_argument("--stereo", action="store_true", help="--write-stage: the half-SBS stereo video too")
    parser.add_argument("--cold", action="store_true", help="--write-stage: the kept frames read from the disk")
    args = parser.parse_args()
    if args.write_stage:
        write_stage_main(args.write_stage, args.stereo, args.cold, args.repeat)
        return
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
