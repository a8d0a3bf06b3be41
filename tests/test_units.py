"""A video as units (rollingdepth/runtime/units.py, assembly.py, plan.py's units): shots run
apart, long shots in segments chained on their overlaps, units resumed after a kill.

The model is the stand-in of :mod:`tests.stand_ins`: its snippets are known affine copies of a
known depth video, so what a segmented run recovers can be measured against the truth. The
frames carry their own number, so every unit sees the video's frames, not its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rollingdepth.frontends import run_video as cli
from rollingdepth.runtime.plan import largest_span, plan_units, segment_overlap, segment_starts

from .conftest import TINY_CHECKPOINT, held_run
from .stand_ins import depth_video, save_frames_with_ids, save_stand_in_checkpoint

REPO = Path(__file__).resolve().parent.parent
FRAMES, SIZE = 40, (32, 48)
CUTS = [14, 24]  # shots of 14, 10 and 16 frames
SHOTS = [(0, 14), (14, 10), (24, 16)]
# run-video in a child process that can load the stand-in (diffusers finds its classes in imported modules)
_RUN = "import sys, tests.stand_ins\nfrom rollingdepth.frontends import run_video as cli\ncli.main(sys.argv[1:])\n"


# ----------------------------------------------------------------------------- the plan of units
@pytest.mark.parametrize("count,k", [(40, 16), (14, 12), (1000, 100), (8000, 1000), (101, 100), (17, 8)])
def test_segments_cover_a_long_shot_with_overlaps(count, k):
    parts = segment_starts(count, k)
    assert parts[0][0] == 0 and parts[-1][0] + parts[-1][1] == count
    assert all(n <= k for _, n in parts)
    overlaps = [a + n - b for (a, n), (b, _) in zip(parts, parts[1:])]
    assert min(overlaps) >= segment_overlap(k) and max(overlaps) < min(n for _, n in parts) / 2
    fewer = len(parts) - 1  # one segment fewer could not cover the shot with those overlaps
    assert fewer * k - (fewer - 1) * segment_overlap(k) < count


def test_overlaps_are_three_times_the_largest_snippet_span():
    """The paper's dilations at K = 1000: snippets of dilation 25 span 51 frames, overlaps 153;
    in short segments the span is capped with the dilations, the overlap at half a segment."""
    from rollingdepth.method.settings import MethodSettings

    settings = MethodSettings(dilations=[1, 10, 25], snippet_lengths=[3]).validate()
    assert largest_span(settings, 1000) == 51 and segment_overlap(1000, 51) == 153
    parts = segment_starts(10_000, 1000, 51)
    assert min(a + n - b for (a, n), (b, _) in zip(parts, parts[1:])) >= 153
    assert largest_span(settings, 36) == 23 and segment_overlap(36, 23) == 18  # dilation 25 capped to 11, half of 36
    assert segment_overlap(1000) == 48 and largest_span(settings, 0) == 0
    auto = MethodSettings(dilations=[1, 25], snippet_lengths="auto").validate()
    assert largest_span(auto, 1000) == 76  # the longest automatic snippet: 4 frames


def test_a_shot_that_fits_is_one_unit():
    assert segment_starts(40, 40) == [(0, 40)] and segment_starts(40, 0) == [(0, 40)]
    units = plan_units(SHOTS, 12)
    assert [(u.shot, u.segment, u.segments, u.first) for u in units] == [
        (0, 0, 2, 0), (0, 1, 2, 5), (1, 0, 1, 14), (2, 0, 2, 24), (2, 1, 2, 30)]
    assert [u.index for u in units] == list(range(5))
    assert units[1].label(3) == "shot 1/3 segment 2/2" and units[2].label(3) == "shot 2/3"


# ----------------------------------------------------------------------------- run-video with the stand-in
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_stand_in_checkpoint(tmp_path_factory.mktemp("stand_in") / "checkpoint", TINY_CHECKPOINT)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The clip as a folder of PNGs (lossless: each frame keeps its number), and a cut list."""
    folder = save_frames_with_ids(tmp_path_factory.mktemp("input") / "clip", FRAMES, *SIZE)
    cut_list = folder.parent / "cuts.txt"
    cut_list.write_text("# cut list: first frame of each new shot\n" + "\n".join(map(str, CUTS)) + "\n")
    return folder, cut_list


def args_for(checkpoint, folder, out, *extra) -> list[str]:
    return [str(folder), "-c", str(checkpoint), "--res", "0", "-d", "1,10", "--snippet-lengths", "3",
            "--dtype", "fp32", "--no-save-sbs", "--cmap", "Greys_r", "-o", str(out), *extra]


def run_cli(args) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 0


class Runs:
    """run-video's prediction and report per set of options, each computed once for the module."""

    def __init__(self, checkpoint, clip, root: Path):
        self.checkpoint, (self.folder, self.cut_list), self.root = checkpoint, clip, root
        self.done: dict[tuple, tuple[np.ndarray, dict]] = {}

    def args(self, out: Path, *extra) -> list[str]:
        return args_for(self.checkpoint, self.folder, out, *extra)

    def __call__(self, *extra) -> tuple[np.ndarray, dict]:
        if extra not in self.done:
            out = self.root / f"run{len(self.done)}"
            run_cli(self.args(out, "-q", *extra))
            self.done[extra] = (np.load(out / "clip_pred.npy"), json.loads((out / "clip_run.json").read_text()))
        return self.done[extra]

    def cuts(self, *extra):
        return self("--shots", str(self.cut_list), *extra)


@pytest.fixture(scope="module")
def runs(checkpoint, clip, tmp_path_factory):
    return Runs(checkpoint, clip, tmp_path_factory.mktemp("runs"))


def affine_error(depth: np.ndarray, frames: slice = slice(None)) -> float:
    """Mean absolute error of ``depth`` against the stand-in's depth video, after the best affine fit."""
    video = depth_video(torch.arange(FRAMES), *SIZE).numpy()[frames]
    fit = np.polyfit(depth[frames].ravel(), video.ravel(), 1)
    return float(np.abs(video - np.polyval(fit, depth[frames])).mean())


def test_each_shot_equals_a_run_of_that_shot_alone(runs):
    """With a cut list, each shot's rows are, bit for bit, what run-video gives for that shot
    alone (--from, --frames); run.json lists the shots."""
    depth, report = runs.cuts("--segment-frames", "0")
    assert [(s["first"], s["frames"], s["found_by"]) for s in report["shots"]] == [
        (0, 14, "start"), (14, 10, "cut list"), (24, 16, "cut list")]
    assert report["frames"] == FRAMES and report["settings"]["units"] == 3
    for first, count in SHOTS:
        alone, alone_report = runs("--shots", "none", "--from", str(first), "--frames", str(count))
        assert alone.shape[0] == count
        assert np.array_equal(depth[first : first + count], alone), (first, count)
    whole, whole_report = runs("--shots", "none", "--segment-frames", "0")
    assert whole_report["shots"] == [{"index": 0, "first": 0, "frames": FRAMES, "found_by": "start",
                                      "dilations": [1, 10], "coalign_loss": whole_report["coalign_loss"],
                                      "depth_range": whole_report["depth_range"]}]
    assert np.abs(depth - whole).max() > 0.1  # the cuts change the result: each shot is its own problem


def test_shots_of_one_to_five_frames(runs, tmp_path):
    """Shots of 1, 2, 3 and 5 frames (dilations capped to each) run, each as it runs alone."""
    cut_list = tmp_path / "short.txt"
    cut_list.write_text("1\n3\n6\n11\n35\n")
    depth, report = runs("--shots", str(cut_list), "--segment-frames", "0")
    spans = [(s["first"], s["frames"]) for s in report["shots"]]
    assert spans == [(0, 1), (1, 2), (3, 3), (6, 5), (11, 24), (35, 5)]
    assert [s["dilations"] for s in report["shots"]][:4] == [[1]] * 4  # 10 capped to what fits, then 1 once
    # the report describes each shot as it ran; the video's settings say where they differ
    assert [s["settings"]["dilations"] for s in report["shots"]] == [s["dilations"] for s in report["shots"]]
    assert report["shots"][4]["settings"]["dilations"] == [1, 7]  # 24 frames: 10 capped to 24 // 3 - 1
    assert report["settings"]["dilations"] == "per shot" and report["settings"]["snippets_per_dilation"] == "per shot"
    assert report["settings"]["coalign"] == "fast" and all(s["seconds"] > 0 for s in report["shots"])
    for first, count in spans:
        alone, _ = runs("--shots", "none", "--from", str(first), "--frames", str(count))
        assert np.array_equal(depth[first : first + count], alone), (first, count)
    assert np.isfinite(depth).all() and depth.min() == -1.0


def test_segments_recover_the_video_as_well_as_one_piece(runs):
    """40 frames in segments of at most 16 (four, overlapping by 8: half a segment, as three times
    the span of dilation 10 capped to 16 frames, 4, would be 27): aligned and blended, they recover
    the depth video about as well as the method in one piece."""
    one_piece, _ = runs("--shots", "none", "--segment-frames", "0")
    segmented, report = runs("--shots", "none", "--segment-frames", "16")
    [shot] = report["shots"]
    assert [(s["first"], s["frames"], s["overlap_frames"]) for s in shot["segments"]] == [
        (0, 16, 0), (8, 16, 8), (16, 16, 8), (24, 16, 8)]
    assert shot["overlap_frames"] == 24 and shot["warnings"] == [] and shot["scale_first_to_last"] > 0
    assert report["settings"]["units"] == 4 and segmented.min() == -1.0 and segmented.max() == 1.0
    e_one, e_seg = affine_error(one_piece), affine_error(segmented)
    print(f"mean error after an affine fit: one piece {e_one:.5f}, segments {e_seg:.5f}")
    assert e_seg <= 1.5 * e_one + 1e-3
    assert np.abs(segmented - one_piece).max() > 1e-4  # a different computation, not the same one


def test_a_shot_within_the_segment_length_is_unchanged(runs):
    """Segments of at most 12 frames: shots 1 (14) and 3 (16) run in segments, shot 2 (10) whole,
    and its rows are bit for bit those of shot 2 alone."""
    depth, report = runs.cuts("--segment-frames", "12")
    assert [len(s.get("segments", [])) for s in report["shots"]] == [2, 0, 2]
    alone, _ = runs("--shots", "none", "--from", "14", "--frames", "10")
    assert np.array_equal(depth[14:24], alone)
    for first, count in (SHOTS[0], SHOTS[2]):
        rows = slice(first, first + count)
        assert affine_error(depth, rows) < 0.05, rows


SHOT_KEYS = ["index", "first", "frames", "found_by", "dilations", "settings", "seconds", "coalign_loss", "depth_range"]
SEGMENTED_KEYS = [*SHOT_KEYS, "segments", "overlap_frames", "scale_first_to_last", "warnings"]
SEGMENT_KEYS = ["first", "frames", "scale", "shift", "coalign_loss", "overlap_frames", "overlap_rms"]


def test_run_json_lists_shots_segments_and_units_as_before(runs):
    """run.json's shots and units (runtime/reports.py) for shots 1 and 3 in segments of at most 12
    frames: the keys, in their order, and the places the reports had when they were dicts."""
    _, report = runs.cuts("--segment-frames", "12")
    assert [list(s) for s in report["shots"]] == [SEGMENTED_KEYS, SHOT_KEYS, SEGMENTED_KEYS]
    segments = [seg for s in report["shots"] for seg in s.get("segments", [])]
    assert [list(seg) for seg in segments] == [SEGMENT_KEYS, [*SEGMENT_KEYS[:-1], "link", "overlap_rms"]] * 2
    assert [(seg["first"], seg["frames"], seg["overlap_frames"]) for seg in segments] == [
        (0, 10, 0), (4, 10, 6), (24, 11, 0), (29, 11, 6)]
    assert [(s.get("overlap_frames"), s.get("warnings")) for s in report["shots"]] == [(6, []), (None, None), (6, [])]
    assert [list(u) for u in report["units"]] == [["index", "shot", "segment", "first", "frames", "seconds"]] * 5
    assert [(u["index"], u["shot"], u["segment"], u["first"], u["frames"]) for u in report["units"]] == [
        (0, 0, 0, 0, 10), (1, 0, 1, 4, 10), (2, 1, 0, 14, 10), (3, 2, 0, 24, 11), (4, 2, 1, 29, 11)]
    assert sum(u["seconds"] for u in report["units"]) == pytest.approx(sum(s["seconds"] for s in report["shots"]), abs=2e-3)


def true_depth(frames: np.ndarray) -> np.ndarray:
    """The scene's depth in metres: its inverse is affine in the stand-in's depth video."""
    return 1.0 / (0.5 * depth_video(torch.from_numpy(frames), *SIZE).numpy() + 0.1)


def test_known_distances_give_depth_in_their_unit_per_shot(runs, tmp_path):
    """--depth-points: six measured points per shot; every shot's depth comes out in metres,
    close to the truth everywhere (not only at the points), each shot with its own fit."""
    rng = np.random.default_rng(3)
    lines = ["frame,x,y,depth_m"]
    for first, count in SHOTS:
        for _ in range(6):
            f, x, y = int(rng.integers(first, first + count)), int(rng.integers(0, SIZE[1])), int(rng.integers(0, SIZE[0]))
            lines.append(f"{f},{x},{y},{true_depth(np.array([f]))[0, y, x]:.6f}")
    points = tmp_path / "points.csv"
    points.write_text("\n".join(lines) + "\n")
    depth, report = runs.cuts("--segment-frames", "0", "--depth-points", str(points))
    truth = true_depth(np.arange(FRAMES))
    relative = np.abs(depth - truth) / truth
    print(f"known distances: median relative error {np.median(relative):.4f}, 95th percentile "
          f"{np.percentile(relative, 95):.4f}")
    assert np.median(relative) < 0.03 and np.percentile(relative, 95) < 0.1
    fits = report["depth_points"]
    assert [(f["first"], f["points"]) for f in fits] == [(0, 6), (14, 6), (24, 6)]
    assert len({round(f["scale"], 6) for f in fits}) == 3  # a fit per shot
    assert report["depth_output"]["mode"] == "per shot"
    assert max(f["rms"] for f in fits) < 0.1


def test_a_shot_without_known_distances_is_refused_before_the_run(runs, tmp_path):
    points = tmp_path / "few.csv"
    points.write_text("0,1,1,2.0\n5,3,3,2.5\n")  # the first shot only
    with pytest.raises(SystemExit) as info:
        cli.main(runs.args(tmp_path / "out", "-q", "--shots", str(runs.cut_list), "--depth-points", str(points)))
    assert info.value.code != 0
    assert not list((tmp_path / "out").glob("clip_*"))


def _journal_stages(out: Path) -> list[str]:
    [folder] = [p for p in out.iterdir() if ".rollingdepth-work-" in p.name]
    return [json.loads(line)["stage"] for line in (folder / "journal.jsonl").read_text().splitlines()[1:] if line]


@pytest.mark.parametrize("case", ["shot", "segment"])
def test_killed_between_units_resumes_without_redoing_them(runs, tmp_path, case):
    """SIGKILL while the second unit starts (the next shot, or the next segment of a shot); the
    same command again does not redo the first unit and gives the same prediction."""
    if case == "shot":
        extra, held_at, finished = ("--shots", str(runs.cut_list), "--segment-frames", "0"), {"shot": 2}, {"shot": 1}
    else:
        extra, held_at, finished = ("--shots", "none", "--segment-frames", "16"), {"segment": 2}, {"segment": 1}
    want, _ = runs(*extra)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HELD_RUN_IMPORTS="tests.stand_ins")
    proc = held_run(runs.args(tmp_path, *extra), {"stage": "encode", "phase": "start", **held_at}, cwd=REPO, env=env)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "unit" in _journal_stages(tmp_path) and not (tmp_path / "clip_pred.npy").exists()
    resumed = subprocess.run([sys.executable, "-c", _RUN, *runs.args(tmp_path, *extra), "--progress", "json",
                              "--log-every", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [json.loads(line) for line in resumed.stderr.splitlines() if line.startswith("{")]
    stages = [e for e in events if e["event"] == "stage" and e["stage"] != "write"]
    key, value = next(iter(finished.items()))
    assert stages and not [e for e in stages if e.get(key) == value]  # the finished unit is not done again
    assert [e for e in stages if e.get(key) == value + 1]
    np.testing.assert_allclose(np.load(tmp_path / "clip_pred.npy"), want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- three scenes, the tiny checkpoint
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three scenes joined by hard cuts (tests/shot_clips.py) as a folder of PNGs, their true cuts,
    and a cut list of them."""
    from .shot_clips import three_scenes

    frames, cuts = three_scenes()
    folder = tmp_path_factory.mktemp("scenes") / "scenes"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame[..., ::-1])
    cut_list = folder.parent / "cuts.csv"
    cut_list.write_text("cut,note\n" + "".join(f"{c},hard cut\n" for c in cuts))
    return folder, frames, cuts, cut_list


def scene_run(folder: Path, out: Path, *extra) -> tuple[np.ndarray, dict]:
    run_cli([str(folder), "-c", str(TINY_CHECKPOINT), "--res", "32", "-d", "1,4", "--dtype", "fp32", "--no-save-sbs",
             "--cmap", "Greys_r", "-q", "-o", str(out), *extra])
    return np.load(out / f"{folder.name}_pred.npy"), json.loads((out / f"{folder.name}_run.json").read_text())


def test_scenes_cut_apart_as_runs_of_each_shot(scenes, tmp_path):
    """--shots auto (the fast preset's) finds the hard cuts at their frames; each shot's rows are
    what run-video gives for that shot alone; a cut list of those cuts gives the same."""
    folder, frames, cuts, cut_list = scenes
    depth, report = scene_run(folder, tmp_path / "auto")
    assert [s["first"] for s in report["shots"][1:]] == cuts
    assert [s["found_by"] for s in report["shots"]] == ["start", "auto", "auto"]
    starts = [0, *cuts, len(frames)]
    for first, stop in zip(starts, starts[1:]):
        alone, _ = scene_run(folder, tmp_path / f"alone{first}", "--shots", "none", "--from", str(first),
                             "--frames", str(stop - first))
        np.testing.assert_allclose(depth[first:stop], alone, atol=1e-5, rtol=0)
    listed, listed_report = scene_run(folder, tmp_path / "listed", "--shots", str(cut_list))
    assert [s["found_by"] for s in listed_report["shots"]] == ["start", "cut list", "cut list"]
    assert np.array_equal(listed, depth)


def test_shots_none_is_the_method_on_the_whole_video(scenes, tmp_path):
    """--shots none: one run of the method over every frame, as RollingDepthPipeline computes it."""
    from rollingdepth import RollingDepthPipeline

    folder, frames, cuts, _ = scenes
    depth, report = scene_run(folder, tmp_path / "none", "--shots", "none")
    assert len(report["shots"]) == 1 and report["settings"].get("units") is None
    pipe = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT), torch_dtype=torch.float32)
    want = pipe(frames, processing_res=32, dilations=[1, 4], snippet_lengths=[3], cap_dilation=True, refine_step=0,
                coalign="fast", generator=torch.Generator().manual_seed(0)).depth
    np.testing.assert_allclose(depth, want, atol=1e-5, rtol=0)


def test_cuts_are_looked_for_as_a_video_of_one_unit_is_encoded(scenes, tmp_path, monkeypatch):
    """--shots auto on a video that is one unit unless it has cuts reads its frames no more often
    than --shots none does (the cuts are looked for in the frames the run encodes, not in a pass
    of their own), and gives the same prediction when it has no cut; with cuts, the run starts
    again as its shots (test_scenes_cut_apart_as_runs_of_each_shot checks what they give)."""
    from rollingdepth.io.video_io import VideoSource

    folder, frames, cuts, _ = scenes
    reads = []
    plain = VideoSource.frames
    monkeypatch.setattr(VideoSource, "frames", lambda self, *a, **k: reads.append(a) or plain(self, *a, **k))
    one_scene = ("--frames", str(cuts[0]))  # the first scene only: no cut
    auto, report = scene_run(folder, tmp_path / "auto", *one_scene)
    auto_reads, reads[:] = len(reads), []
    whole, _ = scene_run(folder, tmp_path / "none", "--shots", "none", *one_scene)
    assert auto_reads == len(reads) >= 1
    assert [s["found_by"] for s in report["shots"]] == ["start"] and np.array_equal(auto, whole)
    reads.clear()
    _, report = scene_run(folder, tmp_path / "cuts")
    assert [s["first"] for s in report["shots"][1:]] == cuts
    assert reads[0] == (0, 0)  # the whole video, as the run encoded it, found the cuts


# ----------------------------------------------------------------------------- a long shot, realistic errors
LONG, LONG_SIZE, LONG_K, FLAT = 984, (16, 24), 48, [400, 500]  # 40 segments


@pytest.fixture(scope="module")
def long_runs(tmp_path_factory):
    """run-video on 984 frames with the stand-in whose snippets carry their own smooth error (10 %
    of the depth's spread) and whose frames 400..499 are featureless: in segments of at most 48
    frames (overlaps of 24: 40 segments), and in one piece."""
    root = tmp_path_factory.mktemp("long")
    checkpoint = save_stand_in_checkpoint(root / "checkpoint", TINY_CHECKPOINT, snippet_error=0.1, flat_frames=FLAT)
    folder = save_frames_with_ids(root / "clip", LONG, *LONG_SIZE)
    points = root / "points.csv"
    rng = np.random.default_rng(5)
    lines = ["frame,x,y,depth_m"]
    for f in range(10, LONG, 40):  # three points every 40 frames
        for x, y in zip(rng.integers(0, LONG_SIZE[1], 3), rng.integers(0, LONG_SIZE[0], 3)):
            lines.append(f"{f},{x},{y},{_long_depth(np.array([f]))[0, y, x]:.6f}")
    points.write_text("\n".join(lines) + "\n")
    out = {}
    for name, k, extra in (("segments", LONG_K, ()), ("one", 0, ()), ("points", LONG_K, ("--depth-points", str(points)))):
        run_cli([str(folder), "-c", str(checkpoint), "--res", "0", "-d", "1,4", "--snippet-lengths", "3",
                 "--dtype", "fp32", "--no-save-sbs", "--cmap", "Greys_r", "--shots", "none", "--segment-frames", str(k),
                 "-o", str(root / name), "-q", *extra])
        out[name] = (np.load(root / name / "clip_pred.npy"), json.loads((root / name / "clip_run.json").read_text()))
    return out


def _long_depth(frames: np.ndarray) -> np.ndarray:
    """The long clip's depth in metres: its inverse is affine in the stand-in's depth video."""
    return 1.0 / (0.5 * depth_video(torch.from_numpy(frames), *LONG_SIZE, FLAT).numpy() + 0.1)


def _slope(depth: np.ndarray, frames: np.ndarray) -> float:
    """The scale of the prediction's structure: its slope against the stand-in's depth within
    each of ``frames`` (the picture, not the trend over frames), averaged."""
    truth = depth_video(torch.from_numpy(frames), *LONG_SIZE, FLAT).numpy().reshape(len(frames), -1)
    pred = depth[frames].reshape(len(frames), -1)
    t, p = truth - truth.mean(axis=1, keepdims=True), pred - pred.mean(axis=1, keepdims=True)
    return float(np.mean((t * p).mean(axis=1) / (t * t).mean(axis=1)))


def _long_error(depth: np.ndarray) -> float:
    truth = depth_video(torch.arange(LONG), *LONG_SIZE, FLAT).numpy()
    fit = np.polyfit(depth.ravel(), truth.ravel(), 1)
    return float(np.abs(truth - np.polyval(fit, depth)).mean())


def test_a_long_shot_keeps_its_scale_from_end_to_end(long_runs):
    """40 segments whose snippets err as real ones do: each segment's slope against the true depth
    stays within 10 % of the first's (20 % across the featureless stretch), and the error after one
    affine fit within 1.5x the one piece's (measured 1.20x: 0.0419 against 0.0349). Ordinary
    least squares let the scale fall to 0.35 of the first segment's by the end; links trusted
    beyond the two segments' disagreement (their parts' spread only) gave 1.93x."""
    depth, report = long_runs["segments"]
    [shot] = report["shots"]
    segs = shot["segments"]
    assert len(segs) >= 40 and min(s["overlap_frames"] for s in segs[1:]) == 24
    plain = [s for s in segs if s["first"] + s["frames"] <= FLAT[0] or s["first"] >= FLAT[1]]
    slopes = np.array([_slope(depth, np.arange(s["first"], s["first"] + s["frames"])) for s in plain])
    rel = slopes / slopes[0]
    before, after = rel[[s["first"] < FLAT[0] for s in plain]], rel[[s["first"] >= FLAT[1] for s in plain]]
    print(f"slope relative to the first segment: {rel.min():.3f}..{rel.max():.3f}; after the featureless "
          f"stretch / before it {after.mean() / before.mean():.3f}")
    assert np.all(np.abs(before - 1) < 0.10) and abs(after.mean() / before.mean() - 1) < 0.20
    e_seg, e_one = _long_error(depth), _long_error(long_runs["one"][0])
    print(f"error after one affine fit: segments {e_seg:.4f}, one piece {e_one:.4f}")
    assert e_seg < 1.5 * e_one
    # the segments share their snippets' errors in the stretch, so its links keep enough structure
    # here; tests/test_assembly.py's featureless stretch is the one whose links keep only a shift
    assert all(FLAT[0] - LONG_K <= s["first"] <= FLAT[1] for s in segs[1:] if not s["link"]["structured"])


def test_known_distances_hold_a_long_shots_scale_to_its_end(long_runs):
    """--depth-points on the 40-segment shot, three points every 40 frames: each segment with
    points is held at its own fit, so the depth is in metres all along the shot, at its end and
    across the featureless stretch too (points there, at one depth per frame, fix a level)."""
    depth, report = long_runs["points"]
    truth = _long_depth(np.arange(LONG))
    relative = np.abs(depth - truth) / truth
    blocks = {f: float(np.median(relative[f : f + 100])) for f in range(0, LONG, 100)}
    print(f"median relative error of the depth per 100 frames: {[round(b, 3) for b in blocks.values()]}")
    assert max(blocks.values()) < 0.05  # without the segments' fits: 0.076 (frames 300..399)
    [fit] = report["depth_points"]
    assert fit["points"] == 3 * len(range(10, LONG, 40))
