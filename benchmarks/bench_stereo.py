"""Stereo 3D output speed and memory (#45): frames per second of a 1080p half-SBS video written
from a given depth, encoding included, and peak host memory at 100 and 1,000 frames.

The write is run-video's write stage for ``--save-stereo``: the input decoded again in a
background thread (``prefetch`` over ``VideoSource.frames``), the stereo format's writer
(:class:`rollingdepth.io.output_formats.Stereo`: the prediction resized to the frame, both eyes
warped, packed) in its own thread (``BackgroundQueue``), the H.264 encoder in its ffmpeg process.
The prediction is a float32 ``[N, 432, 768]`` ``.npy`` (the processing size of the default
``--res 768``), a moving smooth pattern, so every frame has occlusions and holes.

Makes a 1080p H.264 clip (``testsrc2``, 24 fps) of the longest length asked with the bundled
ffmpeg, then runs each length in a fresh process and prints: frames, seconds, frames per second,
the peak of its anonymous memory (the heap: what grows if frames were held; sampled every 50 ms)
and its peak RSS (which also counts the pages of the prediction file it has read, clean and given
back to the page cache under pressure).

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


def make_inputs(folder: Path, frames: int) -> Path:
    """A 1080p clip of ``frames`` frames."""
    import imageio_ffmpeg

    clip = folder / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size=1920x1080:rate=24", "-frames:v", str(frames), "-c:v", "libx264", "-preset",
                    "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(clip)], check=True)
    return clip


def make_prediction(path: Path, frames: int) -> Path:
    """The stand-in prediction ``[frames, 432, 768]``: a moving smooth pattern and a near disc."""
    h, w = PRED_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pred = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(frames, h, w))
    for i in range(frames):
        pred[i] = 1.0 + np.sin(xx / 40.0 + 0.05 * i) * np.cos(yy / 30.0) + (np.hypot(xx - w / 2, yy - h / 2) < 90)
    pred.flush()
    del pred
    return path


class PeakAnon:
    """The process's peak anonymous memory (heap, not the file pages it reads), sampled every 50 ms."""

    def __init__(self):
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.peak = max(self.peak, int(line.split()[1]) / 1024)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def write_once(clip: Path, pred_path: Path, frames: int, layout: str, out_dir: Path) -> dict:
    """run-video's write stage for one stereo layout: seconds and frames."""
    import contextlib

    from rollingdepth.io.exports import DepthMapping, VideoMapping
    from rollingdepth.io.output_formats import OutputFrame, VideoOutput, output_format
    from rollingdepth.io.video_io import probe_video
    from rollingdepth.runtime.background import BackgroundQueue, prefetch
    from rollingdepth.runtime.run_config import RunConfig

    anon = PeakAnon()
    source = probe_video(clip)
    pred = np.load(pred_path, mmap_mode="r")  # [frames, h, w], as run-video has it
    cfg = RunConfig.build(None, dict(save_stereo=[layout]))
    out = VideoOutput(out_dir=out_dir, stem="clip", settings=cfg, frames=frames, size=PRED_SIZE,
                      input_size=tuple(source.size), prediction_range=(0.0, 3.0),
                      mapping=VideoMapping((DepthMapping("inverse", 0.0, 3.0),)), fps=source.rate,
                      sound=lambda: None, prediction_file=lambda: pred_path, snippet_maps=lambda: [],
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
            "fps": round(frames / seconds, 2), "peak_anon_mb": round(anon.stop(), 1),
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
        clip = make_inputs(folder, max(args.frames))
        print(f"{'frames':>7} {'seconds':>8} {'fps':>6} {'peak anon MB':>13} {'peak RSS MB':>12}  size")
        for n in args.frames:
            out = folder / f"out{n}"
            out.mkdir()
            pred = make_prediction(folder / f"pred{n}.npy", n)
            done = subprocess.run([sys.executable, __file__, "--frames", str(n), "--layout", args.layout, "--one",
                                   str(clip), str(pred), str(out)], check=True, capture_output=True, text=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{r['frames']:>7} {r['seconds']:>8} {r['fps']:>6} {r['peak_anon_mb']:>13} {r['peak_rss_mb']:>12}  "
                  f"{r['size']}")


if __name__ == "__main__":
    main()
