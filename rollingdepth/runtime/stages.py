"""What a progress report is about: a :class:`Stage` of the work on one video, with typed fields.

The library reports progress through one callback, ``callback(stage, done, total)``
(:data:`ProgressCallback`): :class:`~rollingdepth.runtime.passes.VideoRun`'s passes,
:func:`~rollingdepth.runtime.units.run_units` (which adds the unit, a shot or a segment of
one, to each of its runs' stages) and run-video's steps around them. ``stage`` is a
:class:`Stage`; a plain string (``"write"``, ``"load"``) is the name of a stage without a
dilation or a unit (:func:`as_stage`). Front ends read the fields
(:mod:`rollingdepth.frontends.progress`); ``str(stage)`` is the text shown
(``snippets d=10``, ``shot 3/41 segment 2/5 merge``). Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

__all__ = ["ProgressCallback", "Stage", "as_stage", "unit_label"]


def unit_label(shot: int, shots: int, segment: int | None = None, segments: int | None = None) -> str:
    """``shot 3/41`` or ``shot 3/41 segment 2/5`` (1-based)."""
    text = f"shot {shot}/{shots}"
    return text if segment is None else f"{text} segment {segment}/{segments}"


@dataclass(frozen=True)
class Stage:
    """A stage of the work on one video, and where in the video it runs.

    ``name``: ``shots``, ``encode``, ``snippets``, ``coalign``, ``merge``, ``refine``,
    ``refine decode``, ``write``, ``load``. ``dilation``: the snippet group's, for
    ``snippets``. ``shot`` of ``shots`` (1-based): when the video runs as several units;
    ``segment`` of ``segments`` (1-based): when that shot runs in segments.
    """

    name: str
    dilation: int | None = None
    shot: int | None = None
    shots: int | None = None
    segment: int | None = None
    segments: int | None = None

    def within(self, shot: int, shots: int, segment: int | None = None, segments: int | None = None) -> Stage:
        """This stage, of a unit of the video (1-based shot, and segment when the shot has several)."""
        return replace(self, shot=shot, shots=shots, segment=segment, segments=segments)

    def __str__(self) -> str:
        """``snippets d=10``, ``shot 3/41 segment 2/5 merge``: the stage as progress shows it."""
        name = self.name if self.dilation is None else f"{self.name} d={self.dilation}"
        return name if self.shot is None else f"{unit_label(self.shot, self.shots, self.segment, self.segments)} {name}"


def as_stage(stage: Stage | str) -> Stage:
    """A :class:`Stage`; a string is a stage's name (no dilation, no unit)."""
    return stage if isinstance(stage, Stage) else Stage(stage)


# Called as callback(stage, done, total) while a stage runs.
ProgressCallback = Callable[[Stage, int, int], None]
