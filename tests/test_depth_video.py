"""rollingdepth/io/depth_video.py: the 16-bit depth video is lossless, at the exact rate."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from rollingdepth.errors import InputError
from rollingdepth.io.av_video import probe_stream
from rollingdepth.io.depth_video import DepthVideoWriter, read_depth_video


@pytest.mark.parametrize("rate", [Fraction(24000, 1001), Fraction(25), Fraction(30000, 1001)])
def test_every_value_comes_back_at_the_exact_rate(tmp_path, rate):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 65536, (36, 64)).astype(np.uint16) for _ in range(30)]
    frames[3][:] = 65535  # the extremes too
    frames[4][:] = 0
    path = tmp_path / "depth.mkv"
    with DepthVideoWriter(path, rate, (36, 64)) as writer:
        for frame in frames:
            writer.write(frame)
    back = list(read_depth_video(path))
    assert len(back) == len(frames) and all(np.array_equal(a, b) for a, b in zip(frames, back))
    facts = probe_stream(path)
    assert facts.rate == rate and facts.frames == len(frames) and not facts.variable_rate


def test_a_variable_rate_keeps_each_frames_time(tmp_path):
    """Frames given their own times (a variable-rate source's, in its time base) are shown at them,
    to Matroska's millisecond, last as long as the next one's start says, and all read back."""
    time_base = Fraction(1, 15360)
    times = [0, 1536, 3072, 3584, 4096, 4608, 5632, 6656]  # 10, 30 and 15 fps; the last: where frame 6 ends
    frames = [np.full((8, 8), 1000 * i, np.uint16) for i in range(7)]
    path = tmp_path / "depth.mkv"
    with DepthVideoWriter(path, Fraction(7, 1) / Fraction(6656, 15360), (8, 8), times=(times, time_base)) as writer:
        for frame in frames:
            writer.write(frame)
    facts = probe_stream(path)
    assert facts.variable_rate and facts.frames == 7
    written = np.asarray(facts.times) * float(facts.time_base)
    assert np.abs(written - np.asarray(times[:7]) * float(time_base)).max() <= 0.0005
    assert abs(facts.duration - times[-1] * float(time_base)) <= 0.002
    assert all(np.array_equal(a, b) for a, b in zip(read_depth_video(path), frames))
    with pytest.raises(ValueError, match="increase"):
        DepthVideoWriter(path, Fraction(24), (8, 8), times=([0, 5, 5], time_base))


def test_a_frame_of_another_size_or_type_is_refused(tmp_path):
    with DepthVideoWriter(tmp_path / "depth.mkv", Fraction(24), (8, 8)) as writer:
        with pytest.raises(ValueError, match="frame"):
            writer.write(np.zeros((8, 9), np.uint16))
        with pytest.raises(ValueError, match="frame"):
            writer.write(np.zeros((8, 8), np.float32))


def test_a_colour_video_is_not_read_as_depth(tmp_path):
    import av

    path = tmp_path / "colour.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(InputError, match="16-bit"):
        list(read_depth_video(path))
