"""What each stage of a run records when it checkpoints, and reads back when a run resumes.

A store (:mod:`rollingdepth.runtime.stores`) keeps these: :meth:`Store.checkpoint(state)`
after the data a state describes is written, :meth:`Store.resumed(StateClass)` for the last
verified one (or None). On disk they are the ``state`` of the journal's lines, by ``stage``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rollingdepth.runtime.reports import ShotReport, UnitReport

__all__ = ["CoalignState", "EncodeState", "GroupProgress", "MergeState", "OutputsState", "RefineDecodeState", "ShotDone", "ShotsState", "UnitDone",
           "RefineState", "RenormaliseState", "SnippetsState", "StageState"]


@dataclass
class StageState:
    """A stage's checkpoint; ``stage`` names it in the journal."""

    stage: ClassVar[str] = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "StageState":
        return cls(**data)


@dataclass
class EncodeState(StageState):
    """Frames encoded so far (their latents are rows ``[4, h, w]``); sizes and the motion score
    once every frame is encoded (``complete``)."""

    stage: ClassVar[str] = "encode"
    frames: int = 0
    row_shape: list[int] | None = None
    complete: bool = False
    input_size: list[int] | None = None
    size: list[int] | None = None
    motion: float | None = None


@dataclass
class GroupProgress:
    """One snippet group's progress: snippets done and the least decoded value so far."""

    snippets: int = 0
    min: float = float("inf")


@dataclass
class SnippetsState(StageState):
    """Snippets through the UNet and decoded, per group; ``keep_maps``: the decoded maps are
    kept (else only the latents, decoded again in the merge)."""

    stage: ClassVar[str] = "snippets"
    groups: list[GroupProgress] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    keep_maps: bool = True
    complete: bool = False

    @classmethod
    def from_json(cls, data: dict) -> "SnippetsState":
        return cls(**{**data, "groups": [GroupProgress(**g) for g in data.get("groups", [])]})


@dataclass
class CoalignState(StageState):
    """The co-alignment's result: one scale and shift per snippet, per group."""

    stage: ClassVar[str] = "coalign"
    scales: list[list[float]]
    shifts: list[list[float]]
    loss: float
    iterations: int


@dataclass
class MergeState(StageState):
    stage: ClassVar[str] = "merge"
    windows: int  # merge windows written
    lo: float | None = None  # their minimum and maximum (None in journals of earlier versions)
    hi: float | None = None


@dataclass
class RenormaliseState(StageState):
    stage: ClassVar[str] = "renormalise"
    lo: float  # the merged video's minimum and maximum
    hi: float


@dataclass
class RefineState(StageState):
    stage: ClassVar[str] = "refine"
    steps: int  # refinement steps whose latents are kept


@dataclass
class RefineDecodeState(StageState):
    stage: ClassVar[str] = "refine_decode"
    frames: int  # refined frames decoded into the output
    lo: float  # their minimum and maximum so far
    hi: float


@dataclass
class OutputsState(StageState):
    """Output files complete in the output folder."""

    stage: ClassVar[str] = "write"
    files: list[str] = field(default_factory=list)


@dataclass
class ShotsState(StageState):
    """The video's shots: ``cuts`` (first frames of shots 2, 3, ...), how they were found, and
    the frames processed."""

    stage: ClassVar[str] = "shots"
    cuts: list[int]
    found_by: str
    frames: int


@dataclass
class _ReportState(StageState):
    """A checkpoint that holds one typed report (``report_type``: its ``to_json`` and ``from_json``)."""

    report_type: ClassVar[type]
    report: Any

    def to_json(self) -> dict:
        return {"report": self.report.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "_ReportState":
        return cls(cls.report_type.from_json(data["report"]))


@dataclass
class UnitDone(_ReportState):
    """A unit (a shot or a segment) whose run is complete: its report (``index`` first). One
    checkpoint per unit; a resumed run reads them all (:meth:`Store.resumed_all`)."""

    stage: ClassVar[str] = "unit"
    report_type: ClassVar[type] = UnitReport
    report: UnitReport


@dataclass
class ShotDone(_ReportState):
    """A shot whose rows are in the prediction: its report (``index`` first)."""

    stage: ClassVar[str] = "shot"
    report_type: ClassVar[type] = ShotReport
    report: ShotReport
