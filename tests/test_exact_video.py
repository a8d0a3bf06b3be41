"""Exact frames and rates from video files (rollingdepth/io/av_video.py, video_io.py; issue #42).

Each clip is made with the bundled ffmpeg from 64x48 frames that carry their index as 8 big
black / white blocks (bit b of the index: block b), which survive lossy coding and are read
back with :func:`drawn_index`. For each kind of file that seeking by time used to get wrong
(B-frames with the video starting after the sound, B-frames without an edit list, x264's
open GOP, HEVC, 24000/1001 with sound, VP9 in MKV, a variable frame rate, MPEG-TS), reading
from frame S (just before, at and just after a keyframe, and inside a GOP) gives exactly the
frames sequential decoding gives at S, S + 1, ...; probing counts the frames sequential
decoding gives and the exact rate, without decoding a frame. (The ffmpeg ``-ss`` reader this
replaced gave frame 16 for 20 on the late video, 24 for 23 without an edit list and with HEVC,
48 for 47 with the open GOP.)
"""

from __future__ import annotations

import subprocess
import warnings
from fractions import Fraction

import imageio_ffmpeg
import numpy as np
import pytest

from rollingdepth.io import av_video
from rollingdepth.io.video_io import InexactSeekWarning, VideoWriter, probe_video

H, W = 48, 64
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "24", "-sc_threshold", "0"]
X264_BFRAMES = ["-c:v", "libx264", "-bf", "3", "-g", "24", "-sc_threshold", "0"]  # ultrafast has no B-frames
SOUND = ["-f", "lavfi", "-t", "6", "-i", "sine=frequency=440"]
WITH_SOUND = ["-map", "0:v", "-map", "1:a", "-c:a", "aac"]
VFR = "setpts='if(lt(N,40),N/10,if(lt(N,80),4+(N-40)/30,4+40/30+(N-80)/15))/TB'"  # 10, 30, 15 fps parts

# name: (file, frames, rate given to ffmpeg, options before the video input, after it, expected rate, variable)
KINDS = {
    # (-itsoffset on the piped input is lost; setpts gives the video an empty edit of 0.2 s)
    "bframes_video_after_sound": ("clip.mp4", 100, "24", [], [*SOUND, "-vf", "setpts=PTS+0.2/TB", *X264_BFRAMES, *WITH_SOUND],
                                  24, False),
    "bframes_no_edit_list": ("clip.mp4", 100, "24", [], [*X264_BFRAMES, "-use_editlist", "0"], 24, False),
    "bframes_mkv": ("clip.mkv", 100, "24", [], X264_BFRAMES, 24, False),
    "bframes_mpegts": ("clip.ts", 100, "24", [], X264_BFRAMES, 24, False),
    "x264_open_gop": ("clip.mp4", 100, "24", [], ["-c:v", "libx264", "-bf", "3",
                                                   "-x264-params", "open-gop=1:keyint=24:min-keyint=24:scenecut=0"], 24, False),
    "hevc": ("clip.mp4", 100, "24", [], ["-c:v", "libx265", "-tag:v", "hvc1",
                                         "-x265-params", "keyint=24:min-keyint=24:scenecut=0:log-level=error"], 24, False),
    "ntsc_with_sound": ("clip.mp4", 100, "24000/1001", [], [*SOUND, *X264_BFRAMES, *WITH_SOUND], Fraction(24000, 1001), False),
    "ntsc_mkv": ("clip.mkv", 100, "24000/1001", [], X264_BFRAMES, Fraction(24000, 1001), False),  # pts in ms: 41/42 apart
    "vp9_mkv": ("clip.mkv", 100, "24", [], ["-c:v", "libvpx-vp9", "-g", "24", "-deadline", "realtime", "-cpu-used", "8"], 24, False),
    "variable_rate": ("clip.mp4", 120, "30", [], ["-vf", VFR, "-fps_mode", "vfr", *X264_BFRAMES,
                                                  "-video_track_timescale", "90000"], Fraction(3600, 241), True)  # the mean rate,
}


def drawn(count: int) -> np.ndarray:
    """uint8 ``[count, H, W, 3]``: frame i shows bit b of i as block b (2 rows of 4 blocks of 16x24)."""
    frames = np.zeros((count, H, W, 3), np.uint8)
    for i in range(count):
        for bit in range(8):
            row, col = divmod(bit, 4)
            if (i >> bit) & 1:
                frames[i, row * 24 : (row + 1) * 24, col * 16 : (col + 1) * 16] = (255, 128, 255)
    return frames


def drawn_index(frame: np.ndarray) -> int:
    """The index a frame of :func:`drawn` shows (block centres, so codec ringing at the edges is ignored)."""
    bits = [frame[r * 24 + 6 : r * 24 + 18, c * 16 + 4 : c * 16 + 12, 0].mean() > 128 for r in range(2) for c in range(4)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def make(folder, kind: str):
    name, count, rate, before, after = KINDS[kind][:5]
    path = folder / f"{kind}_{name}"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", *before, "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{W}x{H}", "-r", rate, "-i", "-", *after, str(path)]
    subprocess.run(cmd, input=drawn(count).tobytes(), check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exact_video")
    return {kind: make(folder, kind) for kind in KINDS}


@pytest.fixture
def no_decoding(monkeypatch):
    """Every way av_video decodes frames raises while it is on."""

    def refuse(*args, **kwargs):
        raise AssertionError("probing decoded frames")

    with monkeypatch.context() as patch:
        for name in ("_decoded", "_sequential", "_by_pts", "_rgb"):
            patch.setattr(av_video, name, refuse)
        yield


def keyframes(path, table) -> list[int]:
    """Indices of the frames whose packets are keyframes (demuxed, not decoded)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = {p.pts for p in container.demux(stream) if p.is_keyframe and p.pts is not None}
    return [i for i, t in enumerate(table) if t in keys]


def starts(keys: list[int], count: int) -> list[int]:
    """Just before, at and just after the second and third keyframes, inside a GOP, the last frame."""
    near = [k + d for k in keys[1:3] for d in (-1, 0, 1)]
    return sorted({s for s in (*near, (keys[1] if len(keys) > 1 else count) // 2 + 1, count - 2, count - 1) if 0 < s < count})


@pytest.mark.parametrize("kind", list(KINDS))
def test_frames_from_any_start_are_the_frames_sequential_decoding_gives(clips, kind, seeks):
    path, count, rate, variable = clips[kind], KINDS[kind][1], Fraction(KINDS[kind][5]), KINDS[kind][6]
    source = probe_video(path)
    every = np.stack(list(source.frames(0)))
    assert [drawn_index(f) for f in every] == list(range(count))  # sequential decoding is itself right
    assert source.frame_count == count and source.size == (H, W)
    assert source.rate == rate and source.fps == float(rate) and source.variable_rate == variable
    table = source._frame_table(True)
    assert len(table) == count and list(table) == sorted(table)
    keys = keyframes(path, table)
    assert keys[0] == 0 and len(keys) >= 3, keys
    seeks.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactSeekWarning)
        for start in starts(keys, count):
            got = np.stack(list(source.frames(start, 5)))
            assert [drawn_index(f) for f in got] == list(range(start, min(count, start + 5))), f"from frame {start}"
            np.testing.assert_array_equal(got, every[start : start + 5], err_msg=f"from frame {start}")
    assert len(seeks) >= len(starts(keys, count))  # each read seeked (none decoded from frame 0)


def test_the_late_video_starts_after_the_sound(clips):
    """The clip is what it is meant to be: its video's first pts is later than its sound's (0)."""
    import av

    with av.open(str(clips["bframes_video_after_sound"])) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert sound.start_time == 0 and float(video.start_time * video.time_base) > 0.15


@pytest.mark.parametrize("kind", ["bframes_video_after_sound", "ntsc_with_sound", "bframes_mkv", "variable_rate"])
def test_probing_decodes_nothing(clips, kind, no_decoding):
    source = probe_video(clips[kind])
    assert source.frame_count == KINDS[kind][1] and source.rate == Fraction(KINDS[kind][5])
    with pytest.raises(AssertionError, match="probing decoded frames"):  # the guard is on
        next(source.frames(0))


def test_a_frame_with_an_unexpected_timestamp_is_never_taken_for_another(clips):
    """A table whose times no frame has (shifted by half a frame): the read is still exact, after
    one InexactSeekWarning, and later reads decode from the start without another."""
    path = clips["bframes_no_edit_list"]
    source = probe_video(path)
    table = list(source._frame_table(True))
    source.frame_times = [t + (table[1] - table[0]) // 2 for t in table]  # half a frame late
    with pytest.warns(InexactSeekWarning, match=r"frame 30 came with pts \d+, not \d+") as caught:
        got = [drawn_index(f) for f in source.frames(30, 4)]
    assert got == [30, 31, 32, 33] and len(caught) == 1 and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactSeekWarning)
        assert [drawn_index(f) for f in source.frames(60, 2)] == [60, 61] and not source.seekable


def test_a_wrong_computed_table_is_replaced_by_the_packets_times(clips, seeks):
    """A constant-rate MP4's computed table that a frame contradicts: the packets' pts are read
    and the read seeks again, silently."""
    source = probe_video(clips["ntsc_with_sound"])
    assert isinstance(source.frame_times, range) and not source.times_exact  # computed at probe
    source.frame_times = range(source.frame_times.start + 1, source.frame_times.stop + 1, source.frame_times.step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactSeekWarning)
        assert [drawn_index(f) for f in source.frames(50, 3)] == [50, 51, 52]
    assert source.times_exact and source.frame_times[50] == 50 * 1001 and len(seeks) >= 2


def test_written_videos_keep_an_exact_rate(tmp_path):
    for fps, rate in ((Fraction(24000, 1001), Fraction(24000, 1001)), (30000 / 1001, Fraction(30000, 1001)), (12.0, 12)):
        path = tmp_path / "out.mp4"
        with VideoWriter(path, fps, (H, W)) as writer:
            for frame in drawn(10):
                writer.write(frame)
        source = probe_video(path)
        assert source.rate == rate and source.frame_count == 10, fps
    with pytest.raises(ValueError, match="fps: 0"):
        VideoWriter(tmp_path / "bad.mp4", 0, (H, W))


def test_rotation_is_known_at_probe(clips, tmp_path, no_decoding):
    """The display size of a rotated MP4 comes from its track header, before any frame decodes."""
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i",
                    clips["bframes_no_edit_list"], "-c", "copy", rotated], check=True)
    assert probe_video(rotated).size == (W, H)


def test_rotated_frames_have_the_probed_size(clips, tmp_path):
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-display_rotation", "270", "-i",
                    clips["bframes_no_edit_list"], "-c", "copy", rotated], check=True)
    source = probe_video(rotated)
    frames = np.stack(list(source.frames(40, 2)))
    assert frames.shape == (2, W, H, 3) and source.size == (W, H)
    assert [drawn_index(np.rot90(f, k=1)) for f in frames] == [40, 41]  # turned back, the drawn index reads


def test_unreadable_inputs_are_one_line_input_errors(tmp_path):
    from rollingdepth.io.video_io import InputError

    sound = tmp_path / "sound.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", *SOUND, "-c:a", "aac", sound], check=True)
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"not a video at all" * 50)
    for path, reason in ((sound, "the file has no video stream"), (junk, "not a readable video"),
                         (tmp_path / "gone.mp4", "file not found")):
        with pytest.raises(InputError, match=reason):
            probe_video(path)


def test_a_truncated_file_gives_the_frames_whose_data_is_there(clips, tmp_path):
    """B-frames cut off at 60%: probing counts the frames sequential decoding gives (the decoder's
    held frames flushed, the packet cut short skipped), and reading from S gives those frames."""
    whole = tmp_path / "whole.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", clips["bframes_no_edit_list"], "-c", "copy",
                    "-movflags", "+faststart", whole], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    with pytest.warns(UserWarning, match="declares 100 frames but only"):
        source = probe_video(cut)
    every = [drawn_index(f) for f in source.frames(0)]
    assert 0 < source.frame_count == len(every) < 100 and every == sorted(set(every))
    for start in (1, source.frame_count // 2, source.frame_count - 1):
        assert [drawn_index(f) for f in source.frames(start, 3)] == every[start : start + 3]


def test_a_video_without_timestamps_is_read_from_its_start(tmp_path):
    """A raw H.264 stream (no container timestamps): not seekable, so a rank decodes it once
    rather than from frame 0 again at each unit; reading from S still gives frame S, silently."""
    raw = tmp_path / "clip.h264"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
                    "-r", "24", "-i", "-", *X264_BFRAMES, raw], input=drawn(60).tobytes(), check=True)
    source = probe_video(raw)
    if source.frame_times is not None:
        pytest.skip("this FFmpeg gives the raw stream's packets timestamps")
    assert source.frame_count == 60 and not source.seekable
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactSeekWarning)
        assert [drawn_index(f) for f in source.frames(30, 3)] == [30, 31, 32]


@pytest.mark.parametrize("kind", ["bframes_video_after_sound", "hevc", "variable_rate"])
def test_an_mp4_probed_from_its_packets_is_probed_alike(clips, kind, monkeypatch):
    """Without the MP4 index (a PyAV without ``index_entries``, a fragmented file) the packets give
    the same count, rate and frames."""
    indexed = probe_video(clips[kind])
    monkeypatch.setattr(av_video, "_from_index", lambda *args: False)
    source = probe_video(clips[kind])
    assert source.times_exact and (source.frame_count, source.rate, source.variable_rate) == (
        indexed.frame_count, indexed.rate, indexed.variable_rate)
    assert list(source.frame_times) == list(indexed._frame_table(True))
    assert [drawn_index(f) for f in source.frames(25, 3)] == [25, 26, 27]
