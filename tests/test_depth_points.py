"""Known distances (rollingdepth/io/depth_points.py, the fitted mapping of io/exports.py): the file
format, its errors, and the fit of inverse depth."""

from __future__ import annotations

import numpy as np
import pytest

from rollingdepth.io.depth_points import read_depth_points
from rollingdepth.io.exports import DepthMapping, VideoMapping, fit_inverse_depth


def test_reads_points_with_a_header_comments_and_tabs(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("frame,x,y,depth_m\n# measured with a laser\n0, 10, 5, 2.5\n3\t1.5\t7\t10  # the wall\n\n")
    points = read_depth_points(path)
    assert len(points) == 2 and points.frame.tolist() == [0, 3] and points.depth.tolist() == [2.5, 10.0]
    assert points.x.tolist() == [10.0, 1.5] and points.in_frames(1, 4).tolist() == [1]


@pytest.mark.parametrize("text,message", [
    ("0,1,2\n", "line 1: expected four numbers"),
    ("0,1,2,abc\n", "line 1: expected four numbers"),
    ("0,1,2,3\n1.5,1,2,3\n", "line 2: the frame must be a whole number"),
    ("0,-1,2,3\n", "line 1: x and y are pixels"),
    ("0,1,2,0\n", "line 1: the depth must be > 0"),
    ("# nothing\n", "no points"),
])
def test_bad_points_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_depth_points(path)
    assert "p.csv" in str(info.value)


def test_fit_recovers_inverse_depth_and_the_mapping_applies_it():
    rng = np.random.default_rng(1)
    pred = rng.uniform(-1, 1, 20)
    depth = 1.0 / (0.4 * pred + 0.6)
    scale, shift = fit_inverse_depth(pred, depth)
    assert (scale, shift) == pytest.approx((0.4, 0.6))
    mapping = DepthMapping("fitted", -1.0, 1.0, far=100.0, scale=scale, shift=shift)
    np.testing.assert_allclose(mapping.apply(pred), depth, rtol=1e-5)
    assert mapping.value_range == pytest.approx((1.0, 5.0))  # nearest at pred 1, farthest at -1
    assert mapping.apply(np.array([-2.0]))[0] == pytest.approx(100.0)  # beyond the fit: clipped at far
    with pytest.raises(ValueError, match="at least two points"):
        fit_inverse_depth([0.5, 0.5], [1.0, 2.0])
    with pytest.raises(ValueError, match="contradict"):
        fit_inverse_depth([0.0, 1.0], [1.0, 2.0])  # the larger prediction (nearer) given farther


def test_a_video_mapping_picks_each_frames_shot():
    a = DepthMapping("fitted", -1, 1, far=50.0, scale=0.5, shift=1.0)
    b = DepthMapping("depth", -1, 1, near=1.0, far=10.0)
    video = VideoMapping((a, b), (0, 14))
    assert video.at(0) is a and video.at(13) is a and video.at(14) is b and video.at(99) is b
    assert video.is_depth and video.value_range == pytest.approx((a.value_range[0], 10.0))
    assert [s["first"] for s in video.to_dict()["shots"]] == [0, 14]
