"""Shots: cut helpers, hard-cut detection on synthetic clips, cut lists (rollingdepth/io/shots.py)."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from rollingdepth.io.shots import (
    DetectorSettings,
    Shot,
    cuts_from_shots,
    detect_cuts,
    frame_distance,
    frame_signature,
    parse_timecode,
    read_cut_list,
    shots_from_cuts,
    validate_cuts,
)
from tests import shot_clips

FPS = 24.0


def _stream(frames: np.ndarray):
    """The frames one by one, as a reader gives them (a generator, not an array)."""
    yield from frames


def _spans(shots: list[Shot]) -> list[tuple[int, int]]:
    return [(s.first, s.count) for s in shots]


# ----------------------------------------------------------------------------- shots and cuts
def test_shots_from_cuts_cover_the_video():
    shots = shots_from_cuts([3, 4, 9], 12, "cut list")
    assert shots == [Shot(0, 3, "start"), Shot(3, 1, "cut list"), Shot(4, 5, "cut list"), Shot(9, 3, "cut list")]
    assert [s.stop for s in shots] == [3, 4, 9, 12]
    assert shots_from_cuts([], 5) == [Shot(0, 5, "start")]
    assert _spans(shots_from_cuts([1, 2, 3, 4], 5)) == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]  # 1-frame shots


@pytest.mark.parametrize(("cuts", "problem"), [([5, 3], "increasing"), ([3, 3], "repeated"), ([0], "outside"),
                                              ([12], "outside"), ([-1], "outside")])
def test_bad_cuts_name_the_parameter(cuts, problem):
    with pytest.raises(ValueError, match=rf"my_cuts: .*{problem}"):
        validate_cuts(cuts, 12, name="my_cuts")


def test_cuts_from_shots_round_trip():
    shots = shots_from_cuts([3, 4, 9], 12)
    assert cuts_from_shots(shots) == [3, 4, 9]
    assert cuts_from_shots(shots[:1]) == []
    with pytest.raises(ValueError, match="shots: shot 1 .* does not follow on frame 3"):
        cuts_from_shots([shots[0], shots[2]])


def test_bad_found_by_and_frame_count():
    with pytest.raises(ValueError, match="found_by"):
        shots_from_cuts([2], 5, "guess")
    with pytest.raises(ValueError, match="frame_count"):
        shots_from_cuts([], 0)


# ----------------------------------------------------------------------------- detection
def test_three_scenes_cuts_at_the_right_frames():
    frames, truth = shot_clips.three_scenes()
    assert truth == [14, 24]
    assert detect_cuts(_stream(frames)) == truth


def test_detection_streams():
    """Frames are let go as they are read: at most the frame being read is alive."""
    frames, truth = shot_clips.three_scenes()
    alive = []

    def stream():
        for frame in frames:
            copy = frame.copy()
            alive.append(weakref.ref(copy))
            yield copy
            del copy
            assert sum(ref() is not None for ref in alive) <= 1

    assert detect_cuts(stream()) == truth


def test_short_shots_are_found():
    frames, truth = shot_clips.CLIPS["short shots 10,3,1,8"]()
    cuts = detect_cuts(_stream(frames))
    assert cuts == truth
    assert _spans(shots_from_cuts(cuts, len(frames))) == [(0, 10), (10, 3), (13, 1), (14, 8)]


def test_a_cut_near_the_end_is_found():
    frames, truth = shot_clips.three_scenes(counts=(10, 9, 2))
    assert detect_cuts(_stream(frames)) == truth == [10, 19]


@pytest.mark.parametrize("clip", ["pan", "still, then a fast pan", "fast motion", "dissolve", "quick dissolve", "fade",
                                  "quick fade", "fade to near black", "flash"])
def test_no_cut_without_a_hard_cut(clip):
    frames, truth = shot_clips.CLIPS[clip]()
    assert truth == []
    assert detect_cuts(_stream(frames)) == []


def test_a_cut_within_one_set_is_found_by_its_layout():
    frames, truth = shot_clips.CLIPS["jump cut, same set"]()
    assert detect_cuts(_stream(frames)) == truth == [14]


@pytest.mark.parametrize("clip", ["pan", "still, then a fast pan", "fast motion", "dissolve", "fade", "quick fade"])
def test_gradual_changes_fail_the_ratio_test(clip):
    """With almost no floor on the changes, the comparison with the neighbours alone rejects them."""
    low = DetectorSettings(min_colour=0.05, min_layout=0.01)
    frames, _ = shot_clips.CLIPS[clip]()
    assert detect_cuts(_stream(frames), low) == []
    three, truth = shot_clips.three_scenes()
    assert detect_cuts(_stream(three), low) == truth


@pytest.mark.parametrize("clip", list(shot_clips.HARD_CLIPS))
def test_held_pictures_long_flashes_the_dark_and_letterboxes(clip):
    """Animation on twos and threes panning at 2 to 8 px a picture (no cut; before: a cut at
    every new picture), flashes of 2 to 6 frames (no cut; before: cuts at both ends from 4
    frames on), cuts at a mean brightness of 20 to 40 (found; before: none below 30) and inside
    letterbox bars (found)."""
    frames, truth = shot_clips.HARD_CLIPS[clip]()
    assert detect_cuts(_stream(frames)) == truth


def test_a_held_picture_is_not_a_neighbour(monkeypatch):
    """On twos or threes, every other change is none: the neighbours' lower quartile would be 0
    and any change would stand out. Held pictures are skipped."""
    from rollingdepth.io import shots

    frames, _ = shot_clips.HARD_CLIPS["pan 4 px on threes"]()
    assert detect_cuts(_stream(frames)) == []
    monkeypatch.setattr(shots, "_held", lambda *args: False)  # nothing counts as held
    assert len(detect_cuts(_stream(frames))) > 5


def test_a_held_picture_with_noise_is_not_a_neighbour():
    """With grain (noise of 2 grey levels) a repeat is no longer exactly the same picture: it is
    known by a change a third or less of the new pictures' next to it."""
    rng = np.random.default_rng(1)
    frames, _ = shot_clips.HARD_CLIPS["pan 4 px on twos"]()
    grainy = np.clip(frames + rng.normal(0.0, 2.0, frames.shape), 0, 255).astype(np.uint8)
    assert detect_cuts(_stream(grainy)) == []


def test_signatures_ignore_letterbox_bars():
    frames, _ = shot_clips.three_scenes()
    boxed, _ = shot_clips.letterbox((frames, []), 0.2)
    np.testing.assert_allclose(frame_signature(boxed[3])[:-1], frame_signature(frames[3])[:-1], atol=0.02)


def test_signatures_ignore_brightness():
    """A darker copy (a fade's frame) is near in colour and layout; a mirrored copy only in colour;
    another scene is far in both; changes next to a black frame count as none."""
    frame = shot_clips.scene("a", 1)[0]
    sig = frame_signature(frame)
    darker = (frame.astype(np.float32) * 0.6).round().astype(np.uint8)
    assert (frame_distance(sig, frame_signature(darker)) < [0.05, 0.01]).all()
    colour, layout = frame_distance(sig, frame_signature(frame[:, ::-1].copy()))
    assert colour < 0.01 and layout > 0.05
    assert (frame_distance(sig, frame_signature(shot_clips.scene("c", 1)[0])) > [0.3, 0.1]).all()
    assert (frame_distance(sig, frame_signature(np.zeros_like(frame))) == 0.0).all()


def test_min_shot_frames_merges_short_shots():
    frames, _ = shot_clips.CLIPS["short shots 10,3,1,8"]()
    assert detect_cuts(_stream(frames), DetectorSettings(min_shot_frames=4)) == [10, 14]


def test_short_or_odd_inputs():
    assert detect_cuts(iter([])) == []
    frames, _ = shot_clips.three_scenes()
    assert detect_cuts(_stream(frames[:1])) == []
    assert detect_cuts(_stream(frames[13:15])) == [1]  # a two-frame video cut in the middle
    with pytest.raises(ValueError, match="uint8"):
        detect_cuts(_stream(frames.astype(np.float32)))
    with pytest.raises(ValueError, match="ratio"):
        DetectorSettings(ratio=0.5)
    with pytest.raises(ValueError, match="min_layout"):
        DetectorSettings(min_layout=0.0)


# ----------------------------------------------------------------------------- cut lists
EDL = """TITLE: three scenes
FCM: NON-DROP FRAME

001  AX       V     C        00:00:00:00 00:00:00:14 01:00:00:00 01:00:00:14
* FROM CLIP NAME: a.mov
002  AX       V     C        00:00:05:00 00:00:05:00 01:00:00:14 01:00:00:14
002  BX       V     D    012 00:00:00:20 00:00:01:06 01:00:00:14 01:00:01:00
* FROM CLIP NAME: b.mov
003  CX       V     C        00:00:00:08 00:00:00:20 01:00:01:00 01:00:01:12
"""

CUT_LISTS = {
    "frames.txt": "14\n24\n",
    "timecodes.txt": "# HH:MM:SS:FF at 24 fps\n00:00:00:00\n00:00:00:14\n00:00:01:00  # scene c\n",
    "clock.csv": "time,comment\n00:00:00.583,b starts\n\n00:00:01.000,c starts\n",
    "seconds.txt": "0.5833s\n1s\n",
    "edit.edl": EDL,
}


@pytest.mark.parametrize("name", sorted(CUT_LISTS))
def test_cut_list_gives_the_same_shots_as_auto(tmp_path, name):
    frames, _ = shot_clips.three_scenes()
    auto = shots_from_cuts(detect_cuts(_stream(frames)), len(frames), "auto")
    path = tmp_path / name
    path.write_text(CUT_LISTS[name])
    shots = read_cut_list(path, FPS, len(frames))
    assert _spans(shots) == _spans(auto) == [(0, 14), (14, 10), (24, 12)]
    assert [s.found_by for s in shots] == ["start", "cut list", "cut list"]


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("14\nfourteen\n", 2, "cannot read 'fourteen'"),
    ("# cuts\n24\n14\n", 3, "comes before"),
    ("14\n14\n", 2, "repeats"),
    ("14\n99\n", 2, "past the video's last frame 35"),
    ("00:00:00:30\n", 1, "out of range"),
    ("12.5\n", 1, "seconds"),
    ("00:00:01;00\n", 1, "drop-frame"),
    ("TITLE: x\n001  AX  V  C  00:00:00:00 00:00:00:14 01:00:00:00\n", 2, "4 timecodes"),
])
def test_bad_cut_list_names_file_and_line(tmp_path, text, line, problem):
    path = tmp_path / "cuts.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"cuts\.txt, line {line}: .*{problem}"):
        read_cut_list(path, FPS, 36)


def test_missing_cut_list_and_empty_edl(tmp_path):
    with pytest.raises(ValueError, match="nothere.txt: cannot read it"):
        read_cut_list(tmp_path / "nothere.txt", FPS, 36)
    (tmp_path / "empty.edl").write_text("TITLE: nothing\nFCM: NON-DROP FRAME\n")
    with pytest.raises(ValueError, match="empty.edl: an EDL without video events"):
        read_cut_list(tmp_path / "empty.edl", FPS, 36)
    with pytest.raises(ValueError, match="fps must be positive"):
        read_cut_list(tmp_path / "empty.edl", 0.0, 36)


def test_cut_list_of_one_frame_shots(tmp_path):
    path = tmp_path / "cuts.txt"
    path.write_text("1\n2\n3\n")
    assert _spans(read_cut_list(path, FPS, 5)) == [(0, 1), (1, 1), (2, 1), (3, 2)]


@pytest.mark.parametrize(("text", "fps", "frame"), [
    ("42", 24.0, 42), ("00:01:02:03", 25.0, (62 * 25) + 3), ("01:00:00:00", 29.97, 108000),
    ("1:02.5", 24.0, 1500), ("00:00:02.040", 25.0, 51), ("2.5s", 10.0, 25), (".5 s", 10.0, 5),
])
def test_parse_timecode(text, fps, frame):
    assert parse_timecode(text, fps) == frame


@pytest.mark.parametrize("text, fps, frame", [
    ("00:10:00;00", 30000 / 1001, 17982), ("00:00:59;29", 30000 / 1001, 1799), ("00:01:00;02", 30000 / 1001, 1800),
    ("01:00:00;00", 30000 / 1001, 107892), ("00:01:00;04", 60000 / 1001, 3600), ("00:10:00:00", 30000 / 1001, 18000),
])
def test_drop_frame_timecodes(text, fps, frame):
    """``;`` marks drop-frame timecode (17982 frames at 10 minutes, read as 18000 before #43)."""
    assert parse_timecode(text, fps) == frame


def test_a_skipped_drop_frame_label_or_rate_is_refused():
    with pytest.raises(ValueError, match="does not exist"):
        parse_timecode("00:01:00;00", 30000 / 1001)
    with pytest.raises(ValueError, match="30000/1001"):
        parse_timecode("00:01:00;02", 25.0)


def test_an_edl_cuts_the_picture_from_its_timelines_start(tmp_path):
    """Audio-only events are no cuts; record timecodes count from the timeline's whole hour
    (here 01:00:00:00, with black before the first event); FCM: DROP FRAME applies to the events
    after it."""
    edl = tmp_path / "cuts.edl"
    edl.write_text(
        "TITLE: programme\nFCM: DROP FRAME\n\n"
        "001  AX       V     C        00:00:00;00 00:00:10;00 01:00:05;00 01:00:15;00\n"
        "002  AX       A     C        00:00:03;00 00:00:04;00 01:00:08;00 01:00:09;00\n"
        "003  AX       AA/V  C        00:00:10;00 00:10:00;00 01:00:15;00 01:10:05;00\n"
        "004  AX       B     C        00:00:10;00 00:10:00;00 01:10:05;00 01:20:05;00\n")
    shots = read_cut_list(edl, 30000 / 1001, 40000)
    assert [s.first for s in shots] == [0, 150, 450, 18000 + 150 - 18]
