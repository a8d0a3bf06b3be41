"""The plan of one run: which frames go together, computed once from the settings and the
frame count, and read by the passes (:mod:`rollingdepth.runtime.passes`), the time estimate
(:mod:`rollingdepth.runtime.estimate`) and the run report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rollingdepth.method.settings import MethodSettings
from rollingdepth.method.snippets import plan_snippets, refine_dilations, snippet_indices
from rollingdepth.runtime.stages import unit_label

__all__ = ["SEGMENT_OVERLAP", "Plan", "RefinePlan", "SnippetGroup", "Unit", "largest_span", "plan_units", "segment_overlap", "segment_starts"]


@dataclass(frozen=True)
class SnippetGroup:
    """The snippets of one dilation: ``indices[s]`` are the frames of snippet ``s``."""

    dilation: int
    snippet_len: int
    indices: np.ndarray = field(repr=False, compare=False)  # int64 [S, n]

    @property
    def count(self) -> int:
        """Snippets in the group (S)."""
        return int(self.indices.shape[0])

    @property
    def frames(self) -> int:
        """Snippet frames in the group (S * n): each is decoded once."""
        return int(self.indices.size)


@dataclass(frozen=True)
class RefinePlan:
    """Coarse-to-fine refinement: ``schedule[i]`` is the dilation of step ``i``."""

    steps: int
    snippet_len: int  # after shortening to the video
    start_dilation: int  # after capping
    schedule: list[int]


@dataclass(frozen=True)
class Plan:
    """Snippet groups and refinement of a run over ``num_frames`` frames (after capping)."""

    num_frames: int
    groups: tuple[SnippetGroup, ...]
    refine: RefinePlan | None

    @classmethod
    def build(cls, settings: MethodSettings, num_frames: int, snippet_len: int | None = None) -> "Plan":
        """The plan of validated ``settings`` on ``num_frames`` frames; ``snippet_len`` is the
        automatic choice when ``settings.snippet_lengths == "auto"``. A dilation that cannot
        fit without capping raises ``ValueError``."""
        if settings.auto_num_view:
            if snippet_len is None:
                raise ValueError("snippet_len: the automatic snippet length must be chosen before planning")
            lengths = [snippet_len] * len(settings.dilations)
        else:
            lengths = list(settings.snippet_lengths)
        pairs = plan_snippets(num_frames, settings.dilations, lengths, settings.cap_dilation)
        groups = tuple(SnippetGroup(d, n, snippet_indices(num_frames, n, d)) for d, n in pairs)
        refine = None
        if settings.refine_step > 0:
            n = min(settings.refine_snippet_len, num_frames)
            d0 = plan_snippets(num_frames, [settings.refine_start_dilation], [n], True)[0][0]
            refine = RefinePlan(settings.refine_step, n, d0, refine_dilations(settings.refine_step, d0))
        return cls(num_frames, groups, refine)

    @property
    def dilations(self) -> list[int]:
        """Each group's dilation (after capping)."""
        return [g.dilation for g in self.groups]

    @property
    def snippet_lengths(self) -> list[int]:
        """Each group's snippet length (the automatic one where chosen)."""
        return [g.snippet_len for g in self.groups]

    @property
    def snippet_frames(self) -> int:
        """Snippet frames over every group: the decoder's work before refinement."""
        return sum(g.frames for g in self.groups)

    def refine_indices(self, step: int) -> np.ndarray:
        """The snippets ``[S, n]`` of refinement step ``step``."""
        return snippet_indices(self.num_frames, self.refine.snippet_len, self.refine.schedule[step])

    def work(self) -> dict[str, int]:
        """Frames through the VAE encoder and decoder, and snippets through the UNet per
        snippet length (``unet3``: snippets of 3 frames)."""
        work = {"encode": self.num_frames, "decode": self.snippet_frames}
        for g in self.groups:
            work[f"unet{g.snippet_len}"] = work.get(f"unet{g.snippet_len}", 0) + g.count
        if self.refine is not None:
            work["encode"] += self.num_frames
            work["decode"] += self.num_frames
            steps = sum(len(self.refine_indices(i)) for i in range(self.refine.steps))
            key = f"unet{self.refine.snippet_len}"
            work[key] = work.get(key, 0) + steps
        return work

    def report(self, settings: MethodSettings) -> dict:
        """The plan's part of the run report (values after capping)."""
        refine = self.refine
        return {
            "dilations": self.dilations,
            "snippet_lengths": self.snippet_lengths,
            "snippets_per_dilation": [g.count for g in self.groups],
            "refine_snippet_len": refine.snippet_len if refine else settings.refine_snippet_len,
            "refine_start_dilation": refine.start_dilation if refine else settings.refine_start_dilation,
            "refine_dilations": refine.schedule if refine else [],
        }


# ----------------------------------------------------------------------------- units of a video
SEGMENT_OVERLAP = 48  # the least overlap of two consecutive segments of a long shot (at most a quarter of a segment)


def largest_span(settings: MethodSettings, segment_frames: int) -> int:
    """The most frames one snippet spans in a segment of ``segment_frames`` frames (dilations
    capped to it; the longest automatic snippet length where that is chosen per unit)."""
    if segment_frames <= 0:
        return 0
    from rollingdepth.method.num_view import NUM_VIEW_FAST

    lengths = [NUM_VIEW_FAST] * len(settings.dilations) if settings.auto_num_view else list(settings.snippet_lengths)
    pairs = plan_snippets(segment_frames, settings.dilations, lengths, True)
    return max((n - 1) * d + 1 for d, n in pairs)


def segment_overlap(segment_frames: int, span: int = 0) -> int:
    """The overlap of consecutive segments at most ``segment_frames`` long whose largest snippet
    spans ``span`` frames: three times that span (they are fitted on its middle half, away
    from either segment's edge frames), at least :data:`SEGMENT_OVERLAP`
    (a quarter of a short segment), at most half a segment."""
    return min(max(min(SEGMENT_OVERLAP, segment_frames // 4), 3 * span), segment_frames // 2)


@dataclass(frozen=True)
class Unit:
    """A piece of a video that runs the method on its own: a shot, or a segment of a long shot.

    Frames ``first .. first + count - 1`` (of the frames processed), shot ``shot`` (0-based),
    segment ``segment`` of ``segments`` in that shot."""

    index: int
    shot: int
    segment: int
    segments: int
    first: int
    count: int

    @property
    def stop(self) -> int:
        return self.first + self.count

    def place(self, shots: int) -> dict[str, int]:
        """Where the unit is, 1-based, as progress reports it (:meth:`Stage.within
        <rollingdepth.runtime.stages.Stage.within>`): its shot of ``shots``, and its segment
        where the shot has several."""
        where = {"shot": self.shot + 1, "shots": shots}
        return where if self.segments == 1 else {**where, "segment": self.segment + 1, "segments": self.segments}

    def label(self, shots: int) -> str:
        """``shot 3/41`` or ``shot 3/41 segment 2/5`` (1-based), for messages."""
        return unit_label(**self.place(shots))


def segment_starts(count: int, segment_frames: int, span: int = 0) -> list[tuple[int, int]]:
    """``(first, count)`` of the segments of a shot of ``count`` frames: one when it fits in
    ``segment_frames`` (0 = no limit), else the fewest segments of equal length at most
    ``segment_frames`` whose neighbours overlap by at least :func:`segment_overlap` frames."""
    if segment_frames <= 0 or count <= segment_frames:
        return [(0, count)]
    overlap = segment_overlap(segment_frames, span)
    m = -(-(count - overlap) // (segment_frames - overlap))  # segments needed
    length = -(-(count + (m - 1) * overlap) // m)  # <= segment_frames
    starts = [(j * (count - length)) // (m - 1) for j in range(m)]
    return [(s, length) for s in starts]


def plan_units(shot_spans: list[tuple[int, int]], segment_frames: int, span: int = 0) -> list[Unit]:
    """The units of a video whose shots are ``(first, count)``: each shot whole, or in
    overlapping segments of at most ``segment_frames`` frames (0 = never split) whose largest
    snippet spans ``span`` frames (:func:`largest_span`; it sets the overlaps)."""
    units: list[Unit] = []
    for s, (first, count) in enumerate(shot_spans):
        parts = segment_starts(count, segment_frames, span)
        for j, (offset, length) in enumerate(parts):
            units.append(Unit(len(units), s, j, len(parts), first + offset, length))
    return units
