"""The reports of a video's units and shots, typed: what the journal keeps of each finished unit
(:class:`UnitReport`) and placed shot (:class:`ShotReport`, with a :class:`SegmentReport` per
segment of a shot in segments), and where each unit is (:class:`UnitPlace`).

Each has ``to_json()`` (its fields in order, as the journal's ``unit`` and ``shot`` states and
``{stem}_run.json``'s ``shots`` and ``units`` hold them; optional fields left out when not set)
and ``from_json()`` (the typed report from that JSON, as a resumed run reads its journal).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from rollingdepth.runtime.assembly import Link
from rollingdepth.runtime.model_steps import WorkCounts

__all__ = ["SegmentReport", "ShotReport", "UnitPlace", "UnitReport"]


def _plain(value):
    """A field's value as JSON holds it: tuples as lists, typed values as their JSON."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, WorkCounts):
        return value.as_dict()
    if hasattr(value, "to_json"):
        return value.to_json()
    return value


def _json(report, optional: tuple[str, ...] = ()) -> dict:
    """``report``'s fields in order, as JSON holds them; those named in ``optional`` left out when None."""
    values = ((f.name, getattr(report, f.name)) for f in dataclasses.fields(report))
    return {name: _plain(value) for name, value in values if not (value is None and name in optional)}


@dataclass(frozen=True, kw_only=True)
class UnitPlace:
    """Where a unit is in the video, and its seconds (and the rank that ran it and in which
    round of an elastic launch, when the units are spread over ranks)."""

    index: int
    shot: int
    segment: int
    first: int
    frames: int
    seconds: float
    rank: int | None = None
    round: int | None = None

    def to_json(self) -> dict:
        return _json(self, ("rank", "round"))

    @classmethod
    def from_json(cls, data: dict) -> UnitPlace:
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class UnitReport:
    """A finished unit's run, as its checkpoint keeps it: where the unit is, what its run gave,
    the settings it ran with (after capping to the unit), its seconds, and its rank and round
    when the units are spread over ranks."""

    index: int
    shot: int
    segment: int
    first: int
    frames: int
    depth_range: tuple[float, float]  # min and max of the unit's prediction
    coalign_loss: float
    dilations: list[int]
    timings: dict[str, float]  # seconds per stage: an open map, stage name -> seconds
    counts: WorkCounts
    num_view_auto: dict | None  # the automatic snippet length's choice and reasons, as the run gave them
    input_size: tuple[int, int]
    size: tuple[int, int]  # processing size (H, W)
    settings: dict  # the values the run used, as RunResult.settings has them: an open map, name -> value
    seconds: float = 0.0
    rank: int | None = None
    round: int | None = None

    @property
    def place(self) -> UnitPlace:
        return UnitPlace(index=self.index, shot=self.shot, segment=self.segment, first=self.first, frames=self.frames,
                         seconds=self.seconds, rank=self.rank, round=self.round)

    def to_json(self) -> dict:
        return _json(self, ("rank", "round"))

    @classmethod
    def from_json(cls, data: dict) -> UnitReport:
        return cls(**{**data, "depth_range": tuple(data["depth_range"]), "counts": WorkCounts(**data["counts"]),
                      "input_size": tuple(data["input_size"]), "size": tuple(data["size"])})


@dataclass(frozen=True, kw_only=True)
class SegmentReport:
    """One segment of a shot in segments: where it is, its scale and shift in the shot's common
    terms, and (but the first) the fit of its overlap with the segment before."""

    first: int
    frames: int
    scale: float
    shift: float
    coalign_loss: float
    overlap_frames: int  # frames it shares with the segment before (0 for the first)
    link: Link | None = None  # the overlap's fit; read back from JSON, without the means only the alignment uses
    overlap_rms: float = 0.0

    def to_json(self) -> dict:
        return _json(self, ("link",))

    @classmethod
    def from_json(cls, data: dict) -> SegmentReport:
        link = data.get("link")
        return cls(**{**data, "link": None if link is None else Link.from_json(link)})


@dataclass(frozen=True, kw_only=True)
class ShotReport:
    """A placed shot's report: where it is, how it was found, the dilations and settings it ran
    with, its seconds, co-alignment loss and value range; for a shot in segments also its
    segments, the frames run twice (their overlaps), the scale of its last segment relative to
    its first and its warnings. A video run in one piece has one, without settings or seconds
    (:meth:`whole`)."""

    index: int
    first: int
    frames: int
    found_by: str
    dilations: list[int] | None
    settings: dict | None = None  # the settings its units ran with, less num_frames: an open map, name -> value
    seconds: float | None = None
    coalign_loss: float
    depth_range: tuple[float, float]  # min and max of its rows
    segments: list[SegmentReport] | None = None
    overlap_frames: int | None = None
    scale_first_to_last: float | None = None
    warnings: list[str] | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("settings", "seconds", "segments", "overlap_frames", "scale_first_to_last", "warnings")

    def to_json(self) -> dict:
        return _json(self, self.OPTIONAL)

    @classmethod
    def from_json(cls, data: dict) -> ShotReport:
        segments = data.get("segments")
        return cls(**{**data, "depth_range": tuple(data["depth_range"]),
                      "segments": None if segments is None else [SegmentReport.from_json(s) for s in segments]})

    @classmethod
    def whole(cls, result) -> ShotReport:
        """The one shot of a video run in one piece: a ``RunResult`` without shots."""
        return cls(index=0, first=0, frames=result.num_frames, found_by="start",
                   dilations=result.plan.dilations if result.plan else None, coalign_loss=result.coalign_loss,
                   depth_range=tuple(result.depth_range))
