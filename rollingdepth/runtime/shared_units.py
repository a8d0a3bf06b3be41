"""One video's units spread over the ranks of a launcher (``torchrun``, ``accelerate launch``).

Every rank knows the video's shots and units (found once, before the video starts) and which
rank runs each unit (:func:`unit_owners`: balanced by frame count, the same on every rank). Each
rank runs its own units in its own folder of the video's work folder (``ranks{W}_{r}/``, one
child store per unit with its own journal), reading only their frames: a restarted rank resumes
them, no unit is run by two ranks, no two ranks write the same file.

The shots are then put together without a second pass over the data. For each overlap of a shot
in segments, the rank of the later segment computes the overlap's sums
(:class:`~rollingdepth.runtime.assembly.OverlapStats`; it reads the earlier segment's shared
rows from that rank's folder); the sums travel over the gloo group and every rank chains them
alike. Each rank composes the frames its units own (a segment owns its frames up to the next
segment's first), the ranks exchange each shot's min and max, and each writes its own rows of the
video's prediction (disjoint byte ranges of one file, preallocated by rank 0). Each frame is
computed as one process computes it, so the prediction is the same.

Rank 0 alone writes the video's journal: once every row is written, the units' reports and the
shots (``UnitDone``, ``ShotDone``); a rank killed before then leaves the rows to be written again.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rollingdepth.runtime.assembly import SegmentRows, align_segments, shot_range, write_range
from rollingdepth.io.shots import Shot, shots_from_cuts
from rollingdepth.runtime.checkpoints import ShotDone, ShotsState, UnitDone
from rollingdepth.runtime.distributed import DistContext, balanced_shards
from rollingdepth.runtime.model_steps import DepthModel
from rollingdepth.runtime.passes import RunResult
from rollingdepth.runtime.plan import Unit
from rollingdepth.runtime.reports import UnitReport
from rollingdepth.runtime.run_config import option_name
from rollingdepth.runtime.stores import JOURNAL, DiskStore, NpyFile
from rollingdepth.runtime.units import UnitsJob, _name, _UnitRunner, copy_rows, overlap_of, shot_record

__all__ = ["SharedUnits", "rank_folder", "run_shared_units", "unit_owners"]

PREDICTION = "prediction.npy"  # a DiskStore's output in its folder


@dataclass
class SharedUnits:
    """A video whose units run across ranks: the launcher's ranks, the video's shots (found once
    for every rank: a ``ShotsState``), on rank 0 a callback told of each unit another rank
    finishes, and the video's work folder (on storage every rank sees; set by :meth:`at`)."""

    dist: DistContext
    state: ShotsState
    on_unit: Callable[[UnitReport], None] | None = None  # (unit report) -> None
    workdir: Path | None = None

    def at(self, workdir: Path) -> "SharedUnits":
        return dataclasses.replace(self, workdir=Path(workdir))

    def folder(self, workdir: Path) -> Path:
        """This rank's folder in the video's work folder (created)."""
        folder = rank_folder(workdir, self.dist)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def open_on_main(self, opener: Callable[[], DiskStore]) -> DiskStore | None:
        """``opener()`` (the video's store) on rank 0, None elsewhere; every rank waits for it, and
        raises when it fails."""
        store, error = None, None
        if self.dist.is_main:
            try:
                store = opener()
            except Exception as exc:
                error = exc
        self.dist.agree(error)
        return store

    def video_shots(self, store: DiskStore | None) -> list[Shot]:
        """The video's shots; rank 0 keeps them in the video's journal too."""
        if store is not None and store.resumed(ShotsState) is None:
            store.checkpoint(self.state)
        return shots_from_cuts(self.state.cuts, self.state.frames, self.state.found_by)  # the same on every rank


def unit_owners(units: list[Unit], world_size: int) -> list[int]:
    """The rank of each unit: longest first to the least loaded rank (the same on every rank)."""
    owners = [0] * len(units)
    for rank, shard in enumerate(balanced_shards([u.count for u in units], world_size)):
        for i in shard:
            owners[i] = rank
    return owners


def rank_folder(workdir: Path, dist: DistContext) -> Path:
    """The folder of this rank's units in the video's work folder (one per launch size: a run
    resumed with another number of ranks does not mistake another rank's units for its own)."""
    return Path(workdir) / f"ranks{dist.world_size}_{dist.rank}"


def run_shared_units(pipe: DepthModel, video: DiskStore | None, settings, job: UnitsJob,
                     shared: SharedUnits) -> RunResult | None:
    """This rank's part of a video of several units; the video's result on rank 0 (``video``:
    its store there, None elsewhere), None elsewhere."""
    return _SharedRunner(pipe, video, settings, job, shared).run_shared()


class _LazyRows:
    """A unit's prediction ``[count, H, W]`` in its child store's folder, opened when first read."""

    def __init__(self, path: Path, shape: tuple):
        self.path, self.shape, self._file = path, shape, None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if self._file is None:
            self._file = NpyFile(self.path, self.shape, np.float32, mode="r")
        return self._file[key]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _SharedRunner(_UnitRunner):
    def __init__(self, pipe: DepthModel, video: DiskStore | None, settings, job: UnitsJob, shared: SharedUnits):
        self.shared, self.dist, self.video = shared, shared.dist, video
        folder = shared.folder(shared.workdir)
        store = DiskStore(folder, fingerprint={"rank": self.dist.rank, "world_size": self.dist.world_size},
                          elsewhere=f"pass {option_name('work_dir')} on a larger disk")
        super().__init__(pipe, store, settings, job)  # this rank's finished units: from its own journal
        # which rank ran each unit, in which round of an elastic launch (torchrun --max-restarts)
        self.unit_extra = {"rank": self.dist.rank, "round": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))}
        self.record_every_unit = True
        self.owners = unit_owners(job.units, self.dist.world_size)
        placed = len(video.resumed_all(ShotDone)) == len(job.shots) if video is not None else False
        self.placed = self.dist.all_gather(placed)[0]  # rank 0's journal says whether the video is done
        if self.placed and video is not None:
            self.units = {d.report.index: d.report for d in video.resumed_all(UnitDone)}
            self.shots = {d.report.index: d.report for d in video.resumed_all(ShotDone)}
        self.opened: list[_LazyRows] = []

    def run_shared(self) -> RunResult | None:
        if not self.placed:
            self._run_mine()
            for part in self.dist.all_gather({i: r for i, r in self.units.items() if self.owners[i] == self.dist.rank}):
                self.units.update(part)
            self._assemble()
            self.dist.gathered(self._record)  # the video is recorded done: the units' folders can go
        self.store.close()
        shutil.rmtree(self.store.workdir, ignore_errors=True)
        if self.video is None:
            return None
        if self.output is not None:  # read back what every rank wrote, through a fresh file
            self.output.close()
            self.output = None
        return self._result()

    def _record(self) -> None:
        """Rank 0: the units and the shots, in the video's journal."""
        if self.video is not None:
            for i in sorted(self.units):
                self.video.checkpoint(UnitDone(self.units[i]))
            for i in sorted(self.shots):
                self.video.checkpoint(ShotDone(self.shots[i]))

    def _out(self, size):
        """The video's prediction, as every rank wrote it (rank 0, once the rows are written)."""
        if self.output is None:
            self.output = NpyFile(self.shared.workdir / PREDICTION, (self.num_frames, *size), np.float32, mode="r+")
            self.video.arrays["output"] = self.output  # closed with the video's store
        return self.output

    # ------------------------------------------------------------------ this rank's units
    def _run_mine(self) -> None:
        """Run this rank's units not yet done; every rank learns whether any failed."""
        error = None
        watcher = _Watcher(self) if self.video is not None and self.shared.on_unit is not None else None
        try:
            try:
                for unit in self.job.units:
                    if self.owners[unit.index] == self.dist.rank:
                        self._unit(unit)
            except Exception as exc:  # the other ranks must hear of it, or they would wait for ever
                error = exc
            self.dist.agree(error)  # every rank's units are done here
        finally:
            if watcher is not None:
                watcher.stop()

    def _keep_from(self, unit: Unit) -> int | None:
        """Frames are kept for the next segment only when this rank runs it."""
        following = self._following(unit)
        return following.first if following is not None and self._mine(following) else None

    # ------------------------------------------------------------------ the shots, together
    def _rows(self, unit: Unit) -> _LazyRows:
        folder = rank_folder(self.shared.workdir, DistContext(self.owners[unit.index], self.dist.world_size))
        rows = _LazyRows(folder / _name(unit) / PREDICTION, (unit.count, *self.units[unit.index].size))
        self.opened.append(rows)
        return rows

    def _assemble(self) -> None:
        """Write this rank's rows of the video's prediction, shot by shot (see the module's text).
        Each step ends in an exchange that every rank reaches, also when the step failed on one."""
        shape = (self.num_frames, *next(iter(self.units.values())).size)
        self.dist.gathered(lambda: self._allocate(shape))
        shots = []  # (shot, its units, their rows)
        for s, shot in enumerate(self.job.shots):
            units = [u for u in self.job.units if u.shot == s]
            shots.append((shot, units, [SegmentRows(u.first - shot.first, self._rows(u)) for u in units]))
        stats = {i: v for part in self.dist.gathered(lambda: self._overlaps(shots)) for i, v in part.items()}
        links = [[stats[u.index].link() for u in units[1:]] for _, units, _ in shots]  # per shot, per overlap
        affines = [align_segments(shot_links, self._anchors(units, segs) if len(units) > 1 else None)
                   for shot_links, (_, units, segs) in zip(links, shots)]
        every = self.dist.gathered(lambda: self._ranges(shots, affines))
        ranges = {}  # shot -> min and max of its composed frames, over every rank
        for part in every:
            for s, (lo, hi) in part.items():
                old = ranges.get(s, (lo, hi))
                ranges[s] = (min(lo, old[0]), max(hi, old[1]))
        self.dist.gathered(lambda: self._write_rows(shape, shots, (links, affines), ranges))

    def _allocate(self, shape) -> None:
        """Rank 0: the video's prediction, a new file sized for every row."""
        if self.video is not None:
            self.output = self.video.output(shape)

    def _mine(self, unit: Unit) -> bool:
        return self.owners[unit.index] == self.dist.rank

    def _overlaps(self, shots) -> dict:
        """unit index -> the sums of its overlap with the segment before, for this rank's units."""
        return {u.index: overlap_of(segs[j - 1], segs[j])
                for _, units, segs in shots for j, u in enumerate(units) if j and self._mine(u)}

    def _ranges(self, shots, affines) -> dict:
        """shot -> min and max of the composed frames this rank writes of it (shots in segments)."""
        ranges = {}
        for s, (shot, units, segs) in enumerate(shots):
            for j, u in enumerate(units):
                if len(units) > 1 and self._mine(u):
                    lo, hi = shot_range(segs, affines[s], *_owned(units, j, shot.first))
                    old = ranges.get(s, (lo, hi))
                    ranges[s] = (min(lo, old[0]), max(hi, old[1]))
        return ranges

    def _write_rows(self, shape, shots, fits, ranges) -> None:
        """This rank's rows of every shot, flushed to the storage; every shot's report."""
        out = self.output if self.video is not None else NpyFile(self.shared.workdir / PREDICTION, shape, np.float32, mode="r+")
        write = self._writer(out)
        for s, parts in enumerate(shots):
            self._write_shot(s, parts, (fits[0][s], fits[1][s]), ranges.get(s), write)
        out.flush()
        os.fsync(out._file.fileno())  # on shared storage, before the others go on
        for rows in self.opened:
            rows.close()
        if self.video is None:
            out.close()

    def _writer(self, out):
        if self.video is not None:  # rank 0: through the video's store (its checksums go in the journal)
            return lambda rows, values: self.video.write(out, rows, values)
        return lambda rows, values: out.__setitem__(rows, values)

    def _write_shot(self, index: int, parts, fit, value_range, write) -> None:
        """This rank's rows of one shot, and the shot's report (the same on every rank); ``fit``:
        the fits of its overlaps and the scales and shifts of its segments."""
        (shot, units, segs), (links, affines) = parts, fit
        reports = [self.units[u.index] for u in units]
        mine = [j for j, u in enumerate(units) if self.owners[u.index] == self.dist.rank]
        if len(units) == 1:
            if mine:
                copy_rows(segs[0].rows, shot, write)
            self.shots[index] = shot_record(index, shot, units, reports)
            return
        for j in mine:
            write_range(segs, affines, range(*_owned(units, j, shot.first)), value_range,
                        lambda rows, values: write(slice(shot.first + rows.start, shot.first + rows.stop), values))
        self.shots[index] = shot_record(index, shot, units, reports, (links, affines, value_range[1] > value_range[0]))


def _owned(units: list[Unit], j: int, shot_first: int) -> tuple[int, int]:
    """The frames (of the shot) that segment ``j`` writes: from its first to the next one's first."""
    stop = units[j + 1].first if j + 1 < len(units) else units[j].stop
    return units[j].first - shot_first, stop - shot_first


class _Watcher:
    """On rank 0, while its own units run: tells ``shared.on_unit`` of each unit another rank
    finishes (read from that rank's journal on the shared storage, every second)."""

    def __init__(self, runner: _SharedRunner):
        self.runner, self.seen, self.done = runner, set(), threading.Event()
        self.thread = threading.Thread(target=self._poll, name="rollingdepth-units", daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        import json

        runner = self.runner
        while True:
            stopping = self.done.wait(1.0)
            for rank in range(1, runner.dist.world_size):
                path = rank_folder(runner.shared.workdir, DistContext(rank, runner.dist.world_size)) / JOURNAL
                try:
                    lines = path.read_text().split("\n")[1:]
                except OSError:
                    continue
                for line in lines:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    report = UnitDone.from_json(entry["state"]).report if entry["stage"] == UnitDone.stage else None
                    if report is not None and report.index not in self.seen:
                        self.seen.add(report.index)
                        runner.shared.on_unit(report)
            if stopping:
                return

    def stop(self) -> None:
        """Look once more (every rank's units are done), then stop."""
        self.done.set()
        self.thread.join()
