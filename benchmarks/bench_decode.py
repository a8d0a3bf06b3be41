"""Probing and decoding 1080p video: the PyAV reader (rollingdepth/io/av_video.py) against the
imageio-ffmpeg pipe it replaced.

Makes, with the bundled ffmpeg, in a temporary folder:

- a 2-hour 1080p H.264 MP4 (``--hours``), 24 fps: a 10-second ``testsrc2`` segment at CRF 51
  (``ultrafast``, a keyframe every 10 s) repeated by ffmpeg's concat demuxer (``-c copy``), so
  that it is made in seconds; 172,800 frames;
- a 10-second 1080p clip (240 frames, ``testsrc2``, ``veryfast`` CRF 23, B-frames) to decode.

and prints:

- probe: ``probe_video`` on the long clip (no frame decoded), and the old probe's way (ffmpeg
  decoding every frame to count them, ``-f null``) on the long clip's 10-second segment, its
  time scaled to the long clip's length (not run on the long clip: minutes);
- seek: ``frames(S, 1)`` in the middle of the long clip;
- decode: frames per second of ``VideoSource.frames(0)`` (PyAV, RGB ``[H, W, 3]`` arrays) and of
  ``imageio_ffmpeg.read_frames(pix_fmt="rgb24")`` (the old pipe, bytes turned into the same
  arrays), best of ``--repeat``.

    python benchmarks/bench_decode.py
    python benchmarks/bench_decode.py --hours 0.5 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEGMENT_SECONDS = 10


def ffmpeg(*args) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", *map(str, args)], check=True)


def make_long(folder: Path, hours: float) -> tuple[Path, Path]:
    """``(the long clip, the segment it repeats)``."""
    segment, listing, long = folder / "segment.mp4", folder / "segments.txt", folder / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=24", "-t", SEGMENT_SECONDS, "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "51", "-g", 24 * SEGMENT_SECONDS, "-pix_fmt", "yuv420p", segment)
    copies = max(1, round(hours * 3600 / SEGMENT_SECONDS))
    listing.write_text(f"file '{segment}'\n" * copies)
    ffmpeg("-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", long)
    return long, segment


def make_short(folder: Path) -> Path:
    short = folder / "short.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=24", "-t", SEGMENT_SECONDS, "-c:v", "libx264",
           "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", short)
    return short


def old_probe_seconds(path: Path) -> float:
    """What the old probe did: imageio's header read, then ffmpeg decoding every frame to count them."""
    import imageio_ffmpeg

    start = time.perf_counter()
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    next(gen)
    gen.close()
    ffmpeg("-i", path, "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "null", "-")
    return time.perf_counter() - start


def pipe_fps(path: Path) -> float:
    import imageio_ffmpeg

    start = time.perf_counter()
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-map", "0:v:0", "-fps_mode", "passthrough"])
    width, height = next(gen)["size"]
    count = sum(1 for raw in gen if np.frombuffer(raw, np.uint8).reshape(height, width, 3) is not None)
    return count / (time.perf_counter() - start)


def pyav_fps(path: Path) -> float:
    from rollingdepth.io.video_io import probe_video

    start = time.perf_counter()
    count = sum(1 for frame in probe_video(path).frames(0) if frame is not None)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="length of the long clip (probe, seek)")
    parser.add_argument("--repeat", type=int, default=2, help="decode runs of each reader; the best is printed")
    args = parser.parse_args()
    from rollingdepth.io.video_io import probe_video

    print(f"machine: {platform.machine()} {platform.processor()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        (long, segment), short = make_long(folder, args.hours), make_short(folder)
        print(f"made the clips in {time.perf_counter() - start:.1f} s: long {long.stat().st_size / 2**20:.0f} MiB, "
              f"short {short.stat().st_size / 2**20:.1f} MiB")
        start = time.perf_counter()
        source = probe_video(long)
        probe = time.perf_counter() - start
        print(f"probe (new, no decoding): {probe * 1000:.0f} ms for {source.frame_count} frames at {source.rate} fps, "
              f"{source.size[1]}x{source.size[0]}")
        old = old_probe_seconds(segment)
        scale = source.frame_count / probe_video(segment).frame_count
        print(f"probe (old, decoding every frame): {old:.2f} s for the long clip's 10-s segment; x{scale:.0f} = about "
              f"{old * scale / 60:.0f} min for the long clip")
        middle = source.frame_count // 2 + 7
        start = time.perf_counter()
        frame = next(source.frames(middle, 1))
        print(f"seek: frame {middle} ({frame.shape}) in {(time.perf_counter() - start) * 1000:.0f} ms")
        new = max(pyav_fps(short) for _ in range(args.repeat))
        pipe = max(pipe_fps(short) for _ in range(args.repeat))
        print(f"decode 1080p to RGB arrays: PyAV {new:.1f} frames/s, imageio-ffmpeg pipe {pipe:.1f} frames/s "
              f"(best of {args.repeat})")


if __name__ == "__main__":
    main()
