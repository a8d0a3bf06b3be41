"""The reports of a video's units and shots (rollingdepth/runtime/reports.py): the JSON they give
is the JSON the journal and run.json held before they were typed (the dicts of runtime/units.py,
same keys in the same order), and they come back from it as they were.

The expected JSON below is what the dict code gave for the same units, links and scales."""

from __future__ import annotations

import json
from types import SimpleNamespace

from rollingdepth.io.shots import Shot
from rollingdepth.runtime.assembly import Link
from rollingdepth.runtime.checkpoints import ShotDone, UnitDone
from rollingdepth.runtime.model_steps import WorkCounts
from rollingdepth.runtime.plan import plan_units
from rollingdepth.runtime.reports import SegmentReport, ShotReport, UnitPlace, UnitReport
from rollingdepth.runtime.units import _unit_report, shot_record

SETTINGS = {"dilations": [1, 2], "num_frames": 11, "coalign": "fast"}
# unit 2 of the video below (shot 2's second segment) as the dict code reported it
UNIT_2 = {"index": 2, "shot": 1, "segment": 1, "first": 12, "frames": 11, "depth_range": [-1.0, 1.0],
          "coalign_loss": 0.03, "dilations": [1, 2], "timings": {"encode": 0.5, "snippets": 1.25},
          "counts": {"vae_encodes": 11, "vae_decodes": 33, "unet_calls": 2, "unet_frames": 12}, "num_view_auto": None,
          "input_size": [32, 48], "size": [32, 48], "settings": SETTINGS, "seconds": 1.5, "rank": 0, "round": 0}
SEGMENTED = {  # shot 2, in three segments: a link without structure and a scale that drifts
    "index": 1, "first": 5, "frames": 26, "found_by": "auto", "dilations": [1, 2],
    "settings": {"dilations": [1, 2], "coalign": "fast"}, "seconds": 4.5, "coalign_loss": 0.03, "depth_range": [-1.0, 1.0],
    "segments": [
        {"first": 5, "frames": 11, "scale": 0.5, "shift": 0.1, "coalign_loss": 0.02, "overlap_frames": 0, "overlap_rms": 0.0},
        {"first": 12, "frames": 11, "scale": 0.85, "shift": 0.0, "coalign_loss": 0.03, "overlap_frames": 4,
         "link": {"scale": 1.05, "shift": -0.02, "correlation": 0.991235, "sigma": 0.021235, "frames_used": 5,
                  "frames": 6, "rms": 0.03, "structured": True}, "overlap_rms": 0.03},
        {"first": 20, "frames": 11, "scale": 0.875, "shift": -0.1, "coalign_loss": 0.04, "overlap_frames": 3,
         "link": {"scale": 1.0, "shift": 0.01, "correlation": 0.12, "sigma": 0.5, "frames_used": 6, "frames": 6,
                  "rms": 0.2, "structured": False}, "overlap_rms": 0.2}],
    "overlap_frames": 7, "scale_first_to_last": 1.75,
    "warnings": ["shot 2: frames 20..22 (an overlap of segments) have too little structure to fit a scale (correlation "
                 "0.12); only a shift is fitted there",
                 "shot 2: the scale of its last segment is 1.75 times its first's (outside 0.8..1.25): its depth may not "
                 "be consistent from start to end"]}
WHOLE_KEYS = ["index", "first", "frames", "found_by", "dilations", "settings", "seconds", "coalign_loss", "depth_range"]


def _video():
    """A shot of 5 frames and one of 26 in segments of 11: the units, their reports, the shots' reports."""
    units = plan_units([(0, 5), (5, 26)], 12)
    reports = [_unit_report(u, SimpleNamespace(
        depth_range=(-1.0, 1.0), coalign_loss=0.01 * (u.index + 1), settings={**SETTINGS, "num_frames": u.count},
        plan=SimpleNamespace(dilations=SETTINGS["dilations"]),
        timings={"encode": 0.5, "snippets": 1.25}, num_view_auto=None, input_size=(32, 48), size=(32, 48),
        counts=WorkCounts(vae_encodes=u.count, vae_decodes=3 * u.count, unet_calls=2, unet_frames=12)),
        1.5, {"rank": u.index % 2, "round": 0}) for u in units]
    links = [Link(1.05, -0.02, 0.9912345678, 5, 6, 0.03, True, 0.0212345678), Link(1.0, 0.01, 0.12, 6, 6, 0.2, False, 0.5)]
    shots = [shot_record(0, Shot(0, 5, "start"), units[:1], reports[:1]),
             shot_record(1, Shot(5, 26, "auto"), units[1:], reports[1:], (links, [(0.5, 0.1), (0.85, 0.0), (0.875, -0.1)], True))]
    return units, reports, shots


def _through_json(data: dict) -> dict:
    return json.loads(json.dumps(data))


def test_reports_give_the_json_of_the_dict_code():
    """Same keys, same order, same values; a shot of one unit has no segments, overlaps or warnings."""
    _, reports, (whole, segmented) = _video()
    assert json.dumps(reports[2].to_json()) == json.dumps(UNIT_2)
    assert json.dumps(segmented.to_json()) == json.dumps(SEGMENTED)
    assert list(whole.to_json()) == WHOLE_KEYS and whole.to_json()["depth_range"] == [-1.0, 1.0]
    assert reports[2].place.to_json() == {"index": 2, "shot": 1, "segment": 1, "first": 12, "frames": 11, "seconds": 1.5,
                                          "rank": 0, "round": 0}
    alone = UnitReport.from_json({k: v for k, v in UNIT_2.items() if k not in ("rank", "round")})
    assert "rank" not in alone.to_json() and list(alone.place.to_json())[-1] == "seconds"  # one process: no rank


def test_reports_come_back_from_their_json():
    """The journal's unit and shot states, and run.json's shots and units, read back typed and
    written again unchanged."""
    _, reports, shots = _video()
    for report in reports:
        back = UnitDone.from_json(_through_json(UnitDone(report).to_json())).report
        assert back == report and isinstance(back.counts, WorkCounts) and back.size == (32, 48)
        assert UnitPlace.from_json(_through_json(report.place.to_json())) == report.place
    for shot in shots:
        data = _through_json(ShotDone(shot).to_json())
        back = ShotDone.from_json(data).report
        assert back.to_json() == data["report"] and back.depth_range == (-1.0, 1.0)
        assert ShotReport.from_json(back.to_json()) == back
    segments = ShotReport.from_json(SEGMENTED).segments
    assert all(isinstance(s, SegmentReport) for s in segments) and segments[0].link is None
    assert isinstance(segments[2].link, Link) and not segments[2].link.structured


def test_a_journal_of_the_dict_code_is_read():
    """A work folder's journal written before the reports were typed resumes: its states come back
    as the typed reports, and say the same again."""
    unit = UnitDone.from_json({"report": UNIT_2}).report
    assert unit.index == 2 and unit.counts == WorkCounts(11, 33, 2, 12) and unit.rank == 0
    assert UnitDone(unit).to_json() == {"report": UNIT_2}
    shot = ShotDone.from_json({"report": SEGMENTED}).report
    assert shot.warnings == SEGMENTED["warnings"] and shot.segments[1].link.correlation == 0.991235
    assert ShotDone(shot).to_json() == {"report": SEGMENTED}


def test_the_one_shot_of_a_video_run_in_one_piece():
    result = SimpleNamespace(num_frames=40, plan=SimpleNamespace(dilations=[1, 10]), coalign_loss=0.25, depth_range=(-1.0, 1.0))
    assert ShotReport.whole(result).to_json() == {"index": 0, "first": 0, "frames": 40, "found_by": "start",
                                                  "dilations": [1, 10], "coalign_loss": 0.25, "depth_range": [-1.0, 1.0]}


def test_work_counts_add_up():
    assert WorkCounts(1, 2, 3, 4) + WorkCounts(10, 20, 30, 40) == WorkCounts(11, 22, 33, 44)
    assert sum([WorkCounts(1, 0, 0, 0)] * 3, WorkCounts()).as_dict() == {"vae_encodes": 3, "vae_decodes": 0,
                                                                         "unet_calls": 0, "unet_frames": 0}
