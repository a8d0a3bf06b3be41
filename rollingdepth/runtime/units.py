"""One video as units: each shot runs the method on its own, a long shot in segments.

:func:`run_units` runs :func:`rollingdepth.runtime.passes.run` once per
:class:`~rollingdepth.runtime.plan.Unit`, each over a child store of the video's store, with
its own generator seeded alike (a shot gives what a run of that shot alone gives) and with
dilations capped to the unit (so that a 12-frame shot works). Each shot's rows then go into
the video's prediction: a shot run whole as it is, a shot run in segments joined on their
overlaps (:mod:`rollingdepth.runtime.assembly`). Finished units and shots are checkpointed in
the video's store (:class:`~rollingdepth.runtime.checkpoints.UnitDone`,
:class:`~rollingdepth.runtime.checkpoints.ShotDone`): a killed run
redoes neither, and resumes the unit it was in from that unit's own checkpoints.

Host memory depends on the longest unit, not on the video: frames are read forward once
(:class:`FrameCursor`), and only the frames two segments share are kept (on disk) for the
second.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from rollingdepth.errors import InputError
from rollingdepth.io.depth_points import DepthPoints
from rollingdepth.io.exports import fit_inverse_depth
from rollingdepth.io.shots import Shot
from rollingdepth.method.settings import MethodSettings
from rollingdepth.runtime.assembly import SCALE_BOUNDS, Anchor, OverlapStats, SegmentRows, align_segments, fit_window, write_shot
from rollingdepth.runtime.background import prefetch
from rollingdepth.runtime.checkpoints import ShotDone, UnitDone
from rollingdepth.runtime.model_steps import DepthModel, WorkCounts
from rollingdepth.runtime.passes import RunResult, run
from rollingdepth.runtime.plan import Unit
from rollingdepth.runtime.reports import SegmentReport, ShotReport, UnitReport
from rollingdepth.runtime.stages import ProgressCallback
from rollingdepth.runtime.stores import RowLog, Store

__all__ = ["FrameCursor", "KnownPoints", "UnitsJob", "copy_rows", "overlap_of", "overlap_stats", "run_units", "shot_record"]

COPY_CHUNK = 32  # frames copied at a time


class _Kept:
    """Frames kept for the next unit: on disk in ``path`` (or in memory when None)."""

    def __init__(self, first: int, path: Path | None):
        self.first, self.path = first, path
        self.log: RowLog | list | None = None if path else []

    def append(self, frame: np.ndarray) -> None:
        if self.log is None:
            self.log = RowLog(self.path, frame.shape, np.uint8)
        if isinstance(self.log, list):
            self.log.append(frame)
        else:
            self.log.append(frame[None])

    def __len__(self) -> int:
        return 0 if self.log is None else len(self.log)

    def get(self, frame: int) -> np.ndarray:
        i = frame - self.first
        return self.log[i] if isinstance(self.log, list) else self.log[i : i + 1][0]

    def holds(self, frame: int) -> bool:
        return self.first <= frame < self.first + len(self)


class FrameCursor:
    """The frames of a video, read forward once for units that ask for them in order.

    ``open_at(f)`` iterates the frames from frame ``f`` on (of the frames processed). A unit
    that shares frames with the next one says from which frame on (``keep_from``): those are
    kept, in a file of ``spill_dir`` (or in memory without one), and the next unit gets them
    from there. A unit that starts behind what was read and kept reopens the input; so does one
    that starts over ``skip_limit`` frames ahead of it (an input that seeks: the frames between
    are not decoded; None: never).
    """

    def __init__(self, open_at: Callable[[int], Iterator[np.ndarray]], spill_dir: Path | None = None,
                 skip_limit: int | None = None):
        self.open_at, self.spill_dir, self.skip_limit = open_at, spill_dir, skip_limit
        self._gen: Iterator[np.ndarray] | None = None
        self._pos = 0  # the frame the decoder gives next
        self._kept = _Kept(0, None)
        self._flip = 0

    def _decode(self, frame: int) -> np.ndarray:
        """Frame ``frame`` from the decoder; ``StopIteration`` past the end."""
        ahead = self.skip_limit is not None and frame - self._pos > self.skip_limit
        if self._gen is None or self._pos > frame or ahead:
            self._gen, self._pos = iter(self.open_at(frame)), frame
        while self._pos < frame:
            next(self._gen)
            self._pos += 1
        image = next(self._gen)
        self._pos += 1
        return image

    def frames(self, first: int, count: int, keep_from: int | None = None) -> Iterator[np.ndarray]:
        """Frames ``first .. first + count - 1`` (fewer where the input ends), keeping those from
        ``keep_from`` on for the next call."""
        old = self._kept
        path = None
        if self.spill_dir is not None:
            self._flip ^= 1
            path = Path(self.spill_dir) / f"kept_frames_{self._flip}.bin"
        new = _Kept(keep_from if keep_from is not None else first + count, path)
        for f in range(first, first + count):
            if old.holds(f):
                image = old.get(f)
            else:
                try:
                    image = self._decode(f)
                except StopIteration:
                    break
            if keep_from is not None and f >= keep_from:
                new.append(image)
            yield image
        self._kept = new


@dataclass(frozen=True)
class KnownPoints:
    """Known distances (``--depth-points``) that hold a segmented shot's scale along it: the
    ``points`` of the input, whose frame ``start`` is the first frame processed."""

    points: DepthPoints
    start: int

    def anchors(self, units: list[Unit], segments: list[SegmentRows], sizes) -> dict[int, Anchor]:
        """Segment -> its :class:`~rollingdepth.runtime.assembly.Anchor`: inverse depth fitted to
        its values at the points in the frames it owns (up to the next segment's first), for each
        segment with two or more (``sizes``: the input's and the processing size)."""
        out = {}
        for j, (unit, seg) in enumerate(zip(units, segments)):
            stop = units[j + 1].first if j + 1 < len(units) else unit.stop
            idx = self.points.in_frames(self.start + unit.first, self.start + stop)
            if len(idx) < 2:
                continue
            pred = self.points.values(idx, lambda f: seg.rows[f - self.start - unit.first], *sizes)
            out[j] = _anchor(pred, 1.0 / self.points.depth[idx])
        return out


FEW_POINTS_SIGMA = 0.1  # the uncertainty of a segment's fit to two points (no residual to tell)
LEVEL_SPREAD = 0.05  # points whose inverse depths differ by less than this fraction fix no scale


def _anchor(x: np.ndarray, t: np.ndarray) -> Anchor:
    """A segment's fit of inverse depth ``t`` to its values ``x`` at the points: a scale where they
    fix one (:func:`~rollingdepth.io.exports.fit_inverse_depth`; its relative standard error, or
    :data:`FEW_POINTS_SIGMA` with two points), the level at their means in any case."""
    level = Anchor(None, None, float(x.mean()), float(t.mean()), float(t.std()) / math.sqrt(len(t)) + 1e-6)
    if np.ptp(t) < LEVEL_SPREAD * float(t.mean()):
        return level  # the points lie at one depth: they fix a level, not a scale
    try:
        scale, shift = fit_inverse_depth(x, 1.0 / t)
    except ValueError:  # one level of prediction, or the order inverted: no scale, the level still holds
        return level
    residual = float(((t - (scale * x + shift)) ** 2).sum()) / max(len(x) - 2, 1)
    spread = float(((x - x.mean()) ** 2).sum())
    sigma = math.sqrt(residual / spread) / scale if len(x) > 2 and spread > 0 else FEW_POINTS_SIGMA
    return Anchor(scale, sigma, float(x.mean()), float(t.mean()), math.sqrt(residual / len(x)) + 1e-6)


@dataclass
class UnitsJob:
    """What :func:`run_units` needs besides the model, the store and the settings: the video's
    shots and units, its frames, a fresh seeded generator per unit, the progress callback, and
    known distances that hold segmented shots' scales."""

    shots: list[Shot]
    units: list[Unit]
    frames: FrameCursor
    generator: Callable[[], torch.Generator | None]
    callback: ProgressCallback | None = None
    points: KnownPoints | None = None


def run_units(pipe: DepthModel, store: Store, settings: MethodSettings, job: UnitsJob) -> RunResult:
    """Predict depth for a video of several units (:class:`_UnitRunner`) into ``store``'s output."""
    return _UnitRunner(pipe, store, settings, job).run()


class _UnitRunner:
    def __init__(self, pipe: DepthModel, store: Store, settings: MethodSettings, job: UnitsJob):
        self.pipe, self.store, self.job = pipe, store, job
        self.settings = dataclasses.replace(settings, cap_dilation=True)  # dilations capped per unit
        self.units = {d.report.index: d.report for d in store.resumed_all(UnitDone)}  # unit index -> report
        self.shots = {d.report.index: d.report for d in store.resumed_all(ShotDone)}  # shot index -> report
        self.num_frames = sum(s.count for s in job.shots)
        self.output = None
        self.rows: dict[int, Any] = {}  # unit index -> its prediction [count, H, W], for a segmented shot
        self.record_every_unit = False  # UnitDone for a shot of one unit too, as soon as it is run
        self.unit_extra: dict = {}  # more fields of each unit's report (its rank and round)

    def run(self) -> RunResult:
        for shot_index, shot in enumerate(self.job.shots):
            if shot_index in self.shots:
                continue
            units = [u for u in self.job.units if u.shot == shot_index]
            for u in units:
                self._unit(u)
            self.shots[shot_index] = self._place(shot_index, shot, units)
            for u in units:
                if len(units) == 1:  # a shot of one unit: the unit is recorded with its shot
                    self.store.checkpoint(UnitDone(self.units[u.index]))
            self.store.checkpoint(ShotDone(self.shots[shot_index]))
            for u in units:
                rows = self.rows.pop(u.index, None)
                if hasattr(rows, "close"):
                    rows.close()
                self.store.remove_child(_name(u))
        return self._result()

    # ------------------------------------------------------------------ one unit
    def _unit(self, unit: Unit) -> None:
        """Run the unit's prediction into its child store (unless a checkpoint says it is done).
        The child is closed afterwards: a long shot's segments wait for their shot's end without
        their journals in memory."""
        if unit.index in self.units:
            return
        frames = prefetch(self.job.frames.frames(unit.first, unit.count, self._keep_from(unit)))
        notify = self.job.callback
        if notify is not None:
            where = unit.place(len(self.job.shots))
            notify = lambda stage, done, total: self.job.callback(stage.within(**where), done, total)  # noqa: E731
        started = time.perf_counter()
        child = self.store.child(_name(unit), {"first": unit.first, "frames": unit.count})
        try:
            result = run(self.pipe, frames, child, self.settings, generator=self.job.generator(), callback=notify,
                         num_frames_hint=unit.count)
        finally:
            child.close()
        if result.num_frames != unit.count:
            raise InputError(f"the input gave {result.num_frames} frames for {unit.label(len(self.job.shots))} "
                             f"(frames {unit.first}..{unit.stop - 1}); it was counted with more")
        self.units[unit.index] = _unit_report(unit, result, round(time.perf_counter() - started, 3), self.unit_extra)
        if unit.segments > 1 or self.record_every_unit:  # else: a shot of one unit is recorded once placed
            self.store.checkpoint(UnitDone(self.units[unit.index]))

    def _keep_from(self, unit: Unit) -> int | None:
        """The first frame of the unit's next segment (its frames are kept for it), or None."""
        following = self._following(unit)
        return following.first if following else None

    def _following(self, unit: Unit) -> Unit | None:
        """The next segment of the unit's shot, or None."""
        return next((u for u in self.job.units if u.shot == unit.shot and u.segment == unit.segment + 1), None)

    def _report(self, unit: Unit) -> UnitReport:
        return self.units[unit.index]

    def _prediction(self, unit: Unit):
        """The finished unit's prediction ``[count, H, W]``, read from its child store."""
        if unit.index not in self.rows:
            self.rows[unit.index] = self.store.child_output(_name(unit), (unit.count, *self._report(unit).size))
        return self.rows[unit.index]

    # ------------------------------------------------------------------ one shot's rows
    def _out(self, size):
        if self.output is None:
            self.output = self.store.output((self.num_frames, *size))
        return self.output

    def _place(self, index: int, shot: Shot, units: list[Unit]) -> ShotReport:
        """Write the shot's rows into the video's prediction; the shot's report."""
        reports = [self._report(u) for u in units]
        out = self._out(reports[0].size)
        if len(units) == 1:
            copy_rows(self._prediction(units[0]), shot, lambda rows, values: self.store.write(out, rows, values))
            return shot_record(index, shot, units, reports)
        segments = [SegmentRows(u.first - shot.first, self._prediction(u)) for u in units]
        links = [s.link() for s in overlap_stats(segments)]
        affines = align_segments(links, self._anchors(units, segments))
        lo, hi = write_shot(segments, affines, lambda rows, values: self.store.write(
            out, slice(shot.first + rows.start, shot.first + rows.stop), values))
        return shot_record(index, shot, units, reports, (links, affines, hi > lo))

    def _anchors(self, units: list[Unit], segments: list[SegmentRows]) -> dict | None:
        """The segments' fits to known distances (:class:`KnownPoints`), or None without points."""
        if self.job.points is None:
            return None
        report = self._report(units[0])
        return self.job.points.anchors(units, segments, (report.input_size, report.size))

    # ------------------------------------------------------------------ the video's result
    def _result(self) -> RunResult:
        reports = [self.units[i] for i in sorted(self.units)]
        main = reports[0]
        timings: dict[str, float] = {}
        for r in reports:
            for k, v in r.timings.items():
                timings[k] = timings.get(k, 0.0) + v
        counts = sum((r.counts for r in reports), WorkCounts())
        shots = [self.shots[i] for i in sorted(self.shots)]
        settings = {**_common_settings([s.settings or {} for s in shots]), "num_frames": self.num_frames,
                    "units": len(reports)}
        return RunResult(
            num_frames=self.num_frames, input_size=main.input_size, size=main.size,
            depth=self._out(main.size), depth_coaligned=self._out(main.size), snippets=[],
            coalign_loss=float(np.average([s.coalign_loss for s in shots], weights=[s.frames for s in shots])),
            depth_range=(min(s.depth_range[0] for s in shots), max(s.depth_range[1] for s in shots)),
            settings=settings, timings=timings, counts=counts, num_view_auto=main.num_view_auto, shots=shots,
            units=[r.place for r in reports])


def copy_rows(rows, shot: Shot, write) -> None:
    """A shot of one unit: its prediction ``rows [count, H, W]`` handed to ``write(rows of the
    video: slice, values)`` by chunks."""
    for f0 in range(0, shot.count, COPY_CHUNK):
        f1 = min(shot.count, f0 + COPY_CHUNK)
        write(slice(shot.first + f0, shot.first + f1), np.asarray(rows[f0:f1], np.float32))


def overlap_stats(segments: list[SegmentRows]) -> list[OverlapStats]:
    """The sums over each overlap of consecutive segments (``[j - 1]``: segment ``j`` against ``j - 1``)."""
    return [overlap_of(prev, cur) for prev, cur in zip(segments, segments[1:])]


def overlap_of(prev: SegmentRows, cur: SegmentRows) -> OverlapStats:
    """The sums over the frames on which segment ``cur`` is fitted onto the segment before it,
    ``prev``: the middle half of their overlap (:func:`~rollingdepth.runtime.assembly.fit_window`)."""
    lo, hi = fit_window(prev, cur)
    return OverlapStats.of(cur.rows[lo - cur.first : hi - cur.first], prev.rows[lo - prev.first : hi - prev.first])


def shot_record(index: int, shot: Shot, units: list[Unit], reports: list[UnitReport], joined=None) -> ShotReport:
    """A placed shot's report; ``joined``: ``(links, affines, varies)`` of a shot in segments
    (the fit of each overlap, each segment's scale and shift, whether the composed shot varies)."""
    record = ShotReport(
        index=index, first=shot.first, frames=shot.count, found_by=shot.found_by, dilations=reports[0].dilations,
        settings={k: v for k, v in reports[0].settings.items() if k != "num_frames"},
        seconds=round(sum(r.seconds for r in reports), 3),
        coalign_loss=float(np.average([r.coalign_loss for r in reports], weights=[u.count for u in units])),
        depth_range=reports[0].depth_range)
    if joined is None:
        return record
    links, affines, varies = joined
    segments = [SegmentReport(first=u.first, frames=u.count, scale=a, shift=b, coalign_loss=r.coalign_loss,
                              overlap_frames=(units[j - 1].stop - u.first) if j else 0,
                              link=links[j - 1] if j else None, overlap_rms=links[j - 1].rms if j else 0.0)
                for j, (u, r, (a, b)) in enumerate(zip(units, reports, affines))]
    drift = affines[-1][0] / affines[0][0]
    return dataclasses.replace(
        record, depth_range=(-1.0, 1.0) if varies else (0.0, 0.0), segments=segments,
        overlap_frames=sum(s.overlap_frames for s in segments),  # frames run twice
        scale_first_to_last=drift, warnings=_shot_warnings(index, units, links, drift))


def _shot_warnings(index: int, units: list[Unit], links: list, drift: float) -> list[str]:
    """One line per overlap with too little structure to fit a scale, one when the scale drifts."""
    lines = [f"shot {index + 1}: frames {units[j + 1].first}..{units[j].stop - 1} (an overlap of segments) have too "
             f"little structure to fit a scale (correlation {link.correlation:.2f}); only a shift is fitted there"
             for j, link in enumerate(links) if not link.structured]
    if not SCALE_BOUNDS[0] <= drift <= SCALE_BOUNDS[1]:
        lines.append(f"shot {index + 1}: the scale of its last segment is {drift:.2f} times its first's (outside "
                     f"{SCALE_BOUNDS[0]}..{SCALE_BOUNDS[1]}): its depth may not be consistent from start to end")
    return lines


def _name(unit: Unit) -> str:
    """The unit's child store."""
    return f"unit_{unit.index:05d}"


def _unit_report(unit: Unit, result: RunResult, seconds: float, extra: dict) -> UnitReport:
    """What a finished unit's run reported, as its checkpoint keeps it, with the settings it ran
    with (after capping to the unit), its ``seconds`` and ``extra`` (its rank and round)."""
    return UnitReport(
        index=unit.index, shot=unit.shot, segment=unit.segment, first=unit.first, frames=unit.count,
        depth_range=tuple(float(v) for v in result.depth_range), coalign_loss=float(result.coalign_loss),
        dilations=result.plan.dilations, timings={k: float(v) for k, v in result.timings.items()},
        counts=result.counts, num_view_auto=result.num_view_auto, input_size=tuple(result.input_size),
        size=tuple(result.size), settings=result.settings, seconds=seconds, **extra)


PER_UNIT = ("num_frames", "unet_batch_size", "coalign_iterations")  # a shot's own, never the video's


def _common_settings(per_shot: list[dict]) -> dict:
    """The video's settings from its shots': a value all shots share, or "per shot" (see each
    shot's ``settings`` in the report)."""
    keys = [k for k in per_shot[0] if k not in PER_UNIT] if per_shot else []
    return {k: per_shot[0][k] if all(s.get(k) == per_shot[0][k] for s in per_shot) else "per shot" for k in keys}
