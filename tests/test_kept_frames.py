"""The input's frames kept as the run decodes them (rollingdepth.runtime.kept_frames): the write
stage reads a short video's frames from the work folder instead of decoding the input again, and
makes the same videos; over the budget, resumed past the encoding, or incomplete, it decodes again."""

from pathlib import Path

import numpy as np
import pytest

from rollingdepth.io.video_io import VideoSource
from rollingdepth.runtime import kept_frames, passes
from rollingdepth.runtime.kept_frames import KeptFrames, worth_keeping
from rollingdepth.runtime.run_config import RunConfig

from .conftest import make_clip
from .test_run_video import BASE, decode, run, write_clip

FRAMES, HEIGHT, WIDTH = 8, 24, 32
ARGS = [*BASE, "-d", "1,3", "--save-stereo", "half-sbs", "--cmap", "Greys_r", "-q"]
VIDEOS = ["a_3D_hsbs_LR.mp4", "a_Greys_r.mp4", "a_rgbd.mp4"]


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """How many frames ``VideoSource.frames`` gave, every call together (``[count]``)."""
    count, original = [0], VideoSource.frames

    def counted(self, *args, **kwargs):
        for frame in original(self, *args, **kwargs):
            count[0] += 1
            yield frame

    monkeypatch.setattr(VideoSource, "frames", counted)
    return count


@pytest.fixture
def reads(monkeypatch) -> list[bool]:
    """For each ``KeptFrames.read`` of a write stage: whether it gave the kept frames."""
    used, original = [], KeptFrames.read

    def read(self, count):
        frames = original(self, count)
        used.append(frames is not None)
        return frames

    monkeypatch.setattr(KeptFrames, "read", read)
    return used


def _clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "a.mp4", make_clip(FRAMES, HEIGHT, WIDTH))


def _videos(out: Path) -> dict[str, np.ndarray]:
    return {p.name: decode(p) for p in sorted(out.glob("*.mp4"))}


def _run(args: list, out: Path, capsys, decoded: list[int]) -> tuple[dict[str, np.ndarray], int]:
    """The videos of a run, and how many frames it decoded of the input."""
    decoded[0] = 0
    code, _, err = run([*args, "-o", out], capsys)
    assert code == 0, err
    assert not [p for p in out.iterdir() if "-work-" in p.name]  # the work folder, kept frames with it, is gone
    count = decoded[0]
    return _videos(out), count


def _assert_same(videos: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert sorted(videos) == sorted(reference) == VIDEOS
    for name, frames in videos.items():
        assert frames.shape == reference[name].shape and np.array_equal(frames, reference[name]), name


@pytest.mark.parametrize("shots", ["auto", "none"])  # cuts found as the run encodes, or no cuts looked for
def test_a_short_video_is_decoded_once_and_its_videos_are_the_same(tmp_path, capsys, monkeypatch, decoded, reads,
                                                                   shots):
    args = [_clip(tmp_path), *ARGS, "--shots", shots]
    kept, count = _run(args, tmp_path / "kept", capsys, decoded)
    assert count == FRAMES and reads == [True]  # the side-by-side and the stereo video from the kept frames
    assert _report(tmp_path / "kept")["input_frames"]["for_outputs"] == "kept from the run's decode"

    monkeypatch.setattr(kept_frames, "KEEP_BYTES", 0)  # keeping off: the input decoded again
    reads[:] = []
    again, count = _run(args, tmp_path / "read", capsys, decoded)
    _assert_same(again, kept)
    assert count == 2 * FRAMES and reads == []
    report = _report(tmp_path / "read")
    assert report["input_frames"]["for_outputs"] == "decoded again"
    assert report["input_picture"]["bit_depth"] == 8 and report["input_picture"]["hdr"] is None


def _report(folder) -> dict:
    import json

    (path,) = folder.glob("*_run.json")
    return json.loads(path.read_text())


def test_over_the_budget_the_input_is_decoded_again(tmp_path, capsys, monkeypatch, decoded, reads):
    args = [_clip(tmp_path), *ARGS]
    frames_bytes = FRAMES * HEIGHT * WIDTH * 3
    monkeypatch.setattr(kept_frames, "KEEP_BYTES", frames_bytes - 1)
    over, count = _run(args, tmp_path / "over", capsys, decoded)
    assert count == 2 * FRAMES and reads == []
    monkeypatch.setattr(kept_frames, "KEEP_BYTES", frames_bytes)  # just in the budget
    within, count = _run(args, tmp_path / "in", capsys, decoded)
    _assert_same(within, over)
    assert count == FRAMES and reads == [True]


def test_a_run_resumed_past_its_encoding_decodes_again(tmp_path, capsys, monkeypatch, decoded, reads):
    """The resumed run does not decode the frames for the model: the write stage decodes them, once."""
    args = [_clip(tmp_path), *ARGS]
    reference, _ = _run(args, tmp_path / "reference", capsys, decoded)
    merge = passes.VideoRun.merge

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(passes.VideoRun, "merge", killed)
    code, _, _ = run([*args, "-o", tmp_path / "resumed"], capsys)
    [work] = [p for p in (tmp_path / "resumed").iterdir() if "-work-" in p.name]
    assert code == 130 and not (work / kept_frames.KEEP_FILE).exists()  # not left behind: it would not be used
    monkeypatch.setattr(passes.VideoRun, "merge", merge)
    reads[:] = []
    resumed, count = _run(args, tmp_path / "resumed", capsys, decoded)
    _assert_same(resumed, reference)
    assert count == FRAMES and reads == []


def test_a_video_found_to_have_cuts_decodes_again(tmp_path, capsys, monkeypatch, decoded, reads):
    """Its frames went by as the run looked for cuts, but its units decode them again: so does the write stage."""
    from .shot_clips import three_scenes

    frames = three_scenes((8, 8, 8))[0]
    clip = write_clip(tmp_path / "a.mp4", frames)
    args = [clip, *BASE, "-d", "1", "--cmap", "Greys_r", "-q"]
    found, count = _run(args, tmp_path / "found", capsys, decoded)
    assert reads == [False] and count > 2 * len(frames)  # looking for cuts, the units, the write stage
    monkeypatch.setattr(kept_frames, "KEEP_BYTES", 0)
    again, _ = _run(args, tmp_path / "read", capsys, decoded)
    assert sorted(found) == sorted(again) == ["a_Greys_r.mp4", "a_rgbd.mp4"]
    assert all(np.array_equal(found[name], again[name]) for name in found)


def _frames(n: int, size=(4, 5)) -> list[np.ndarray]:
    return [np.full((*size, 3), i, np.uint8) for i in range(n)]


def test_kept_frames_read_back_in_order_only_when_complete(tmp_path):
    frames = _frames(3)
    kept = KeptFrames(tmp_path / "k", (4, 5), 3)
    assert kept.read(3) is None  # nothing went by yet
    assert [f[0, 0, 0] for f in kept.wrap(frames)] == [0, 1, 2]
    assert kept.read(2) is None and kept.read(4) is None  # another count never shifts frames: read again
    assert [f[0, 0, 0] for f in kept.read(3)] == [0, 1, 2]

    early = KeptFrames(tmp_path / "early", (4, 5), 3)
    next(iter(early.wrap(frames)))  # the consumer stopped: not every frame went by
    assert early.read(1) is None


@pytest.mark.parametrize("frames, size, limit", [(_frames(4), (4, 5), 3),  # more frames than counted
                                                 (_frames(3, (4, 6)), (4, 5), 3)])  # another size
def test_kept_frames_give_up_on_what_was_not_expected(tmp_path, frames, size, limit):
    kept = KeptFrames(tmp_path / "k", size, limit)
    assert len(list(kept.wrap(frames))) == len(frames)  # the run gets every frame all the same
    assert kept.read(len(frames)) is None and kept.read(limit) is None and not (tmp_path / "k").exists()


def test_the_budget(tmp_path, monkeypatch):
    """Kept when an output takes the input's frames, at most KEEP_BYTES and a quarter of the free disk."""
    cfg = RunConfig.build(None, {})  # the side-by-side is on by default
    assert worth_keeping(cfg, 100, (1080, 1920), tmp_path) == (100 * 1080 * 1920 * 3 * 4 <= _free(tmp_path))
    assert not worth_keeping(cfg, 173, (1080, 1920), tmp_path)  # 1.08 GB: over 1 GiB
    assert not worth_keeping(cfg, 0, (1080, 1920), tmp_path)
    assert not worth_keeping(RunConfig.build(None, {"save_sbs": False}), 10, (24, 32), tmp_path)
    assert worth_keeping(RunConfig.build(None, {"save_sbs": False, "save_stereo": ["anaglyph"]}), 10, (24, 32), tmp_path)

    class Usage:
        free = 4 * 10 * 24 * 32 * 3

    monkeypatch.setattr(kept_frames.shutil, "disk_usage", lambda folder: Usage)
    assert worth_keeping(cfg, 10, (24, 32), tmp_path) and not worth_keeping(cfg, 11, (24, 32), tmp_path)


def _free(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free
