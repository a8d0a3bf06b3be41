"""Stereo 3D output speed and memory (#45): frames per second of a 1080p half-SBS video written
from a given depth, encoding included, and peak host memory at 100 and 1,000 frames.

The write is run-video's write stage for ``--save-stereo``: the input decoded again in a
background thread (``prefetch`` over ``VideoSource.frames``), the stereo format's writer
(:class:`rollingdepth.io.output_formats.Stereo`: the prediction resized to the frame, both eyes
warped, packed) in its own thread (``BackgroundQueue``), the H.264 encoder in its ffmpeg process.
The prediction is a float32 ``[N, 432, 768]`` ``.npy`` (the processing size of the default
``--res 768``), a moving smooth pattern, so every frame has occlusions and holes.

Makes a 1080p H.264 clip (``testsrc2``, 24 fps) of the longest length asked with the bundled
ffmpeg, then runs each length in a fresh process (its peak RSS is its own) and prints:
frames, seconds, frames per second, peak RSS.

    python benchmarks/bench_stereo.py                      # 100 and 1000 frames, half-sbs
    python benchmarks/bench_stereo.py --frames 240 --layout anaglyph
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRED_SIZE = (432, 768)


def make_inputs(folder: Path, frames: int) -> tuple[Path, Path]:
    """A 1080p clip of ``frames`` frames and its stand-in prediction."""
    import imageio_ffmpeg

    clip = folder / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size=1920x1080:rate=24", "-frames:v", str(frames), "-c:v", "libx264", "-preset",
                    "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(clip)], check=True)
    h, w = PRED_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pred = np.lib.format.open_memmap(folder / "pred.npy", mode="w+", dtype=np.float32, shape=(frames, h, w))
    for i in range(frames):
        pred[i] = 1.0 + np.sin(xx / 40.0 + 0.05 * i) * np.cos(yy / 30.0) + (np.hypot(xx - w / 2, yy - h / 2) < 90)
    pred.flush()
    return clip, folder / "pred.npy"


def write_once(clip: Path, pred_path: Path, frames: int, layout: str, out_dir: Path) -> dict:
    """run-video's write stage for one stereo layout: seconds and frames."""
    import contextlib

    from rollingdepth.io.exports import DepthMapping, VideoMapping
    from rollingdepth.io.output_formats import OutputFrame, VideoOutput, output_format
    from rollingdepth.io.video_io import probe_video
    from rollingdepth.runtime.background import BackgroundQueue, prefetch
    from rollingdepth.runtime.run_config import RunConfig

    source = probe_video(clip)
    pred = np.load(pred_path, mmap_mode="r")[:frames]
    np.save(out_dir / "pred.npy", pred)  # the prediction of these frames, as run-video has it
    cfg = RunConfig.build(None, dict(save_stereo=[layout]))
    out = VideoOutput(out_dir=out_dir, stem="clip", settings=cfg, frames=frames, size=PRED_SIZE,
                      input_size=tuple(source.size), prediction_range=(0.0, 3.0),
                      mapping=VideoMapping((DepthMapping("inverse", 0.0, 3.0),)), fps=source.rate,
                      sound=lambda: None, prediction_file=lambda: out_dir / "pred.npy", snippet_maps=lambda: [],
                      run_settings={})
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        (name, write), = output_format("stereo").open(out, stack)
        queue = stack.enter_context(BackgroundQueue(depth=8, name="stereo"))
        for i, image in enumerate(prefetch(source.frames(0, frames))):
            queue.submit(write, OutputFrame(i, np.asarray(pred[i]), np.asarray(pred[i]), None, image))
        queue.drain()
    seconds = time.perf_counter() - started
    written = probe_video(out_dir / name)
    return {"frames": written.frame_count, "size": list(written.size), "seconds": round(seconds, 2),
            "fps": round(frames / seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--layout", default="half-sbs")
    parser.add_argument("--one", nargs=3, metavar=("CLIP", "PRED", "OUT"), help=argparse.SUPPRESS)  # a child run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(write_once(Path(args.one[0]), Path(args.one[1]), args.frames[0], args.layout,
                                    Path(args.one[2]))))
        return
    import torch

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, layout {args.layout}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip, pred = make_inputs(folder, max(args.frames))
        print(f"{'frames':>7} {'seconds':>8} {'fps':>6} {'peak RSS MB':>12}  size")
        for n in args.frames:
            out = folder / f"out{n}"
            out.mkdir()
            done = subprocess.run([sys.executable, __file__, "--frames", str(n), "--layout", args.layout, "--one",
                                   str(clip), str(pred), str(out)], check=True, capture_output=True, text=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{r['frames']:>7} {r['seconds']:>8} {r['fps']:>6} {r['peak_rss_mb']:>12}  {r['size']}")


if __name__ == "__main__":
    main()
