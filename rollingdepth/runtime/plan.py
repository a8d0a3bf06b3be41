"""The plan of one run: which frames go together, computed once from the settings and the
frame count, and read by the passes (:mod:`rollingdepth.runtime.passes`), the time estimate
(:mod:`rollingdepth.runtime.estimate`) and the run report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rollingdepth.method.settings import MethodSettings
from rollingdepth.method.snippets import plan_snippets, refine_dilations, snippet_indices

__all__ = ["Plan", "RefinePlan", "SnippetGroup"]


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
            "dilations": [g.dilation for g in self.groups],
            "snippet_lengths": [g.snippet_len for g in self.groups],
            "snippets_per_dilation": [g.count for g in self.groups],
            "refine_snippet_len": refine.snippet_len if refine else settings.refine_snippet_len,
            "refine_start_dilation": refine.start_dilation if refine else settings.refine_start_dilation,
            "refine_dilations": refine.schedule if refine else [],
        }
