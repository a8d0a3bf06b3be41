"""Frame-accurate input seeking (rollingdepth/io/video_io.py, av_video.py): a rank that runs
the units of a long video from frame f on decodes from the keyframe before f, not from frame 0.

Checked against sequential decoding (every frame decoded, those before ``start`` dropped) on
MP4 files written by the repository's ``VideoWriter`` (H.264, x264's keyframes every 250
frames), at frame rates with exact and inexact frame times, and on a variable-rate file (found
by the packets' timestamps). The harder files (B-frames, open GOPs, edit lists, other
containers) are in tests/test_exact_video.py.
"""

from __future__ import annotations

import subprocess

from fractions import Fraction

import imageio_ffmpeg
import numpy as np
import pytest

from rollingdepth.io import video_io
from rollingdepth.io.video_io import VideoWriter, probe_video

from .conftest import make_clip

FRAMES = 300
STARTS = (1, 2, 99, 100, 249, 250, 251, FRAMES - 3, FRAMES - 1)


def _write(path, fps: float):
    with VideoWriter(path, fps, (24, 32)) as writer:
        for frame in make_clip(FRAMES, 24, 32):
            writer.write(frame)
    return path


def _sequential(path) -> np.ndarray:
    return np.stack(list(video_io._read_video_frames(path, 0, 0)))


@pytest.mark.parametrize("fps", [24.0, 30000 / 1001, 25.0])
def test_seeking_gives_the_frames_sequential_decoding_gives(tmp_path, fps, seeks):
    path = _write(tmp_path / "clip.mp4", fps)
    source = probe_video(path)
    assert source.frame_count == FRAMES and source.frame_seconds == pytest.approx(1 / fps, rel=1e-9)
    assert source.rate == Fraction(fps).limit_denominator(1001) and source.seekable
    every = _sequential(path)
    for start in STARTS:
        seeks.clear()
        got = np.stack(list(source.frames(start, 4)))
        np.testing.assert_array_equal(got, every[start : start + 4], err_msg=f"from frame {start}")
        assert seeks, f"from frame {start}: no seek"
    seeks.clear()
    assert np.array_equal(np.stack(list(source.frames(0, 3))), every[:3]) and seeks == []


def test_a_variable_frame_rate_is_found_by_timestamps(tmp_path, seeks):
    """Frames 100 on last twice as long: no constant frame time; the packets' pts (read once,
    without decoding) find each frame."""
    path = tmp_path / "vfr.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(_write(tmp_path / "c.mp4", 24.0)),
                    "-vf", "setpts='if(lt(N,100),N,N*2)/24/TB'", "-fps_mode", "vfr", "-c:v", "libx264", str(path)],
                   check=True)
    source = probe_video(path)
    assert source.frame_count == FRAMES and source.frame_seconds is None and source.variable_rate
    every = _sequential(path)
    for start in (50, 150, 250):
        np.testing.assert_array_equal(np.stack(list(source.frames(start, 3))), every[start : start + 3])
    assert len(seeks) >= 3 and source.times_exact


@pytest.mark.parametrize("skip_limit,opened", [(None, [0]), (48, [0, 100]), (0, [0, 100])])
def test_frame_cursor_reopens_an_input_that_seeks_at_a_unit_far_ahead(skip_limit, opened):
    """A rank's units are apart: the cursor opens the input again at the next one (seeking) when
    it is over ``skip_limit`` frames ahead, instead of decoding the frames between."""
    from rollingdepth.runtime.units import FrameCursor

    calls = []

    def open_at(first):
        calls.append(first)
        return iter(np.full((1, 1, 3), i, np.uint8) for i in range(first, 200))

    cursor = FrameCursor(open_at, skip_limit=skip_limit)
    assert [int(f[0, 0, 0]) for f in cursor.frames(0, 5)] == list(range(5))
    assert [int(f[0, 0, 0]) for f in cursor.frames(100, 5)] == list(range(100, 105))
    assert [int(f[0, 0, 0]) for f in cursor.frames(120, 2)] == [120, 121]
    assert calls == opened + ([120] if skip_limit == 0 else [])
