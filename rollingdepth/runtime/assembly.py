"""A long shot's segments made into one depth video.

Each segment (:class:`~rollingdepth.runtime.plan.Unit`) ran the method on its own, so each has
its own scale and shift. Consecutive segments share frames (three times the largest snippet
span where the segment length allows, :func:`~rollingdepth.runtime.plan.segment_overlap`);
they are fitted and blended on the **middle half** of that overlap, away from the edge frames
of either segment (covered by fewer snippets of the largest dilation; measured with the stand-in
model, the middle third gave 1.29 times the one piece's error, the middle half 1.20).

The fit of each overlap (a **link**, :meth:`OverlapStats.link`) treats both segments alike:
both carry errors, so the ordinary least-squares slope of one on the other is biased low by
about ``1 / (1 + r^2)`` (``r`` their disagreement relative to the depth's spread), and chained
over 190 segments that bias flattens the shot's end. The link's scale is the ratio of the two
segments' spreads with the sign of their covariance (geometric-mean regression: symmetric, and
unbiased when both segments err alike relative to their spread), from the frames whose own
ratio agrees with the others (frames more than :data:`TRIM_MADS` median absolute deviations
from the median ratio are left out: a flash, a frame one segment got wrong). A link whose
overlap has too little structure (correlation under :data:`MIN_CORRELATION`, or no spread: a
fade through black, fog, a blank wall) keeps only a shift (its scale ratio is 1), with a note.
A link's uncertainty comes from how much the 3 x 3 parts of its frames disagree, but never
below the two segments' disagreement (:data:`RATIO_DISAGREEMENT`, :data:`SHIFT_DISAGREEMENT`):
the segments' errors are smooth, so the parts err together (measured with the stand-in: the
parts claimed 0.015 in log scale where the links erred by 0.08, and links trusted that much
overrode each segment's own normalisation: 1.6 times the error).

The segments' scales are then the one least-squares solution of the links in log scale, each
segment also tied to its own normalisation (:func:`align_segments`), normalised so that their
geometric mean is 1: no scale can shrink with the others.
Across each overlap's middle the segments are blended with weights that ramp linearly from
one to the other, and the shot is re-normalised to [-1, 1] as a whole, like one run of the
method.

Only sums over the shared pixels of each fitted frame (:class:`Sums`) are needed, so that the
segments of one shot can also be computed apart (other processes) and joined from those sums.
Arrays are read by rows (NumPy arrays or :class:`~rollingdepth.runtime.stores.NpyFile`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Anchor", "Link", "OverlapStats", "SegmentRows", "Sums", "align_segments", "compose", "fit_window",
           "shot_range", "write_range", "write_shot"]

CHUNK = 32  # frames read at a time
MIN_CORRELATION = 0.5  # a link whose segments correlate less keeps only a shift (tests/test_assembly.py measures it)
TRIM_MADS = 4.0  # frames whose log scale ratio lies further from the median are left out of a link's fit
MIN_TRIM = 0.02  # ... but never closer than this (in log scale), so that agreeing frames are all kept
BLOCKS = 3  # each fitted frame's sums are kept for 3 x 3 parts: their disagreement measures a link's error
PARTS_CORRELATED = 2.0  # the parts' errors are not independent: their spread understates a link's error 2x (measured)
LINK_SIGMA = 0.05  # a link's log-scale uncertainty where its parts cannot tell
MIN_SIGMA = 0.001  # ... never below this
RATIO_DISAGREEMENT = 0.5  # ... nor below this times the two segments' disagreement relative to their spread
SHIFT_DISAGREEMENT = 1.0  # a link's shift uncertainty is at least this times the segments' disagreement (rms)
PRIOR_SIGMA = 0.2  # how far a segment's log scale may stray from its own normalisation
SHIFT_SIGMA = 0.05  # a link's shift uncertainty where its parts cannot tell (output units: a segment spans 2)
SHIFT_PRIOR_SIGMA = 0.2  # how far a segment's shift may stray from its own normalisation
ANCHOR_SIGMA = 0.01  # a segment fitted to known distances is held at most that close to its fit (log scale)
SCALE_BOUNDS = (0.8, 1.25)  # a shot whose last segment's scale, relative to its first, leaves these: a warning


@dataclass
class Sums:
    """Sums over pixels two segments share: ``x`` the later segment's values, ``y`` the earlier's."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> "Sums":
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return cls(float(x.size), float(x.sum()), float(y.sum()), float((x * x).sum()), float((x * y).sum()),
                   float((y * y).sum()))

    def __add__(self, other: "Sums") -> "Sums":
        return Sums(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def moments(self) -> tuple[float, float, float, float, float]:
        """Means of x and y, variances of x and y, their covariance."""
        if self.n == 0:
            return 0.0, 0.0, 0.0, 0.0, 0.0
        mx, my = self.sx / self.n, self.sy / self.n
        return (mx, my, max(self.sxx / self.n - mx * mx, 0.0), max(self.syy / self.n - my * my, 0.0),
                self.sxy / self.n - mx * my)

    def correlation(self) -> float:
        """Pearson's correlation of x and y (0 where either is constant)."""
        _, _, vxx, vyy, cxy = self.moments()
        return cxy / math.sqrt(vxx * vyy) if vxx > _tiny(self.sxx, self.n) and vyy > _tiny(self.syy, self.n) else 0.0

    def log_ratio(self) -> float:
        """``log(spread of y / spread of x)``: the symmetric scale of ``y ~ a x`` in log terms."""
        _, _, vxx, vyy, _ = self.moments()
        return 0.5 * math.log(vyy / vxx)

    def rms(self, a: float, b: float) -> float:
        """Root mean square of ``y - (a x + b)``."""
        if self.n == 0:
            return 0.0
        sq = (self.syy - 2 * a * self.sxy - 2 * b * self.sy + a * a * self.sxx + 2 * a * b * self.sx
              + self.n * b * b)
        return math.sqrt(max(sq, 0.0) / self.n)


def _tiny(sum_sq: float, n: float) -> float:
    """A variance below this is no spread (rounding of a constant)."""
    return 1e-12 * max(1.0, abs(sum_sq / n)) if n else 0.0


@dataclass
class Link:
    """The fit of one overlap: the earlier segment ``y ~ scale * x + shift`` (``x`` the later
    one's values); ``structured`` False: too little structure, the scale ratio is held at 1.
    ``sigma``: the uncertainty of ``log(scale)``, from how much the frame's parts disagree."""

    scale: float
    shift: float
    correlation: float
    frames_used: int
    frames: int
    rms: float
    structured: bool
    sigma: float = 0.0
    mean_x: float = 0.0  # the later segment's mean over the fitted pixels
    mean_y: float = 0.0  # the earlier segment's
    part_means: list = field(default_factory=list)  # (mean x, mean y) of each part with pixels

    def shift_sigma(self, a_prev: float, a_next: float) -> float:
        """The uncertainty of the difference of the two segments' means under scales ``a_prev``
        (the earlier) and ``a_next``: the spread of its parts' differences over the root of their number."""
        if len(self.part_means) < 3:
            return SHIFT_SIGMA
        diffs = [a_prev * my - a_next * mx for mx, my in self.part_means]
        parts = PARTS_CORRELATED * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
        return max(parts, SHIFT_DISAGREEMENT * a_prev * self.rms, MIN_SIGMA)

    def to_json(self) -> dict:
        return {"scale": self.scale, "shift": self.shift, "correlation": round(self.correlation, 6),
                "sigma": round(self.sigma, 6), "frames_used": self.frames_used, "frames": self.frames,
                "rms": self.rms, "structured": self.structured}

    @classmethod
    def from_json(cls, data: dict) -> "Link":
        """A link as its report keeps it (:meth:`to_json`): without the means, which only the alignment uses."""
        return cls(**data)


@dataclass
class OverlapStats:
    """Per fitted frame of an overlap (its middle half), the sums over each of its
    :data:`BLOCKS` x :data:`BLOCKS` parts (row-major)."""

    frames: list[list[Sums]] = field(default_factory=list)

    @classmethod
    def of(cls, x_rows, y_rows) -> "OverlapStats":
        """The sums over the frames ``x_rows[i]`` and ``y_rows[i]`` (the same frames of the video)."""
        if len(x_rows) != len(y_rows):
            raise ValueError(f"x_rows and y_rows: {len(x_rows)} and {len(y_rows)} frames; they must show the same frames")
        stats = cls()
        for i in range(0, len(x_rows), CHUNK):
            x, y = np.asarray(x_rows[i : i + CHUNK]), np.asarray(y_rows[i : i + CHUNK])  # [c, H, W]
            rows = np.array_split(np.arange(x.shape[1]), BLOCKS)
            cols = np.array_split(np.arange(x.shape[2]), BLOCKS)
            for xf, yf in zip(x, y):
                stats.frames.append([Sums.of(xf[r[0] : r[-1] + 1, c[0] : c[-1] + 1], yf[r[0] : r[-1] + 1, c[0] : c[-1] + 1])
                                     if len(r) and len(c) else Sums() for r in rows for c in cols])
        return stats

    def pooled(self, keep: list[bool] | None = None, block: int | None = None) -> Sums:
        """The sums over the kept frames (all by default), of one part or of the whole frame."""
        total = Sums()
        for i, parts in enumerate(self.frames):
            if keep is None or keep[i]:
                for b, s in enumerate(parts):
                    if block is None or b == block:
                        total = total + s
        return total

    def _kept(self) -> list[bool]:
        """The frames whose own log scale ratio agrees with the others' (all, where too few have one)."""
        whole = [sum(parts, Sums()) for parts in self.frames]
        ratios = [s.log_ratio() if s.correlation() >= MIN_CORRELATION else None for s in whole]
        known = np.array([r for r in ratios if r is not None])
        if len(known) < 3:
            return [True] * len(self.frames)
        median = float(np.median(known))
        limit = max(TRIM_MADS * 1.4826 * float(np.median(np.abs(known - median))), MIN_TRIM)
        return [r is None or abs(r - median) <= limit for r in ratios]

    def _sigma(self, keep: list[bool]) -> float:
        """The uncertainty of the link's log scale: the spread of its parts' own log ratios over
        the root of their number (:data:`LINK_SIGMA` where fewer than three parts have structure)."""
        parts = [self.pooled(keep, b) for b in range(BLOCKS * BLOCKS)]
        ratios = [p.log_ratio() for p in parts if p.correlation() >= MIN_CORRELATION]
        if len(ratios) < 3:
            return LINK_SIGMA
        return max(PARTS_CORRELATED * float(np.std(ratios, ddof=1)) / math.sqrt(len(ratios)), MIN_SIGMA)

    def link(self) -> Link:
        """The symmetric, trimmed fit of this overlap (see the module's text)."""
        keep = self._kept()
        pooled = self.pooled(keep)
        if pooled.n == 0:
            return Link(1.0, 0.0, 0.0, 0, len(self.frames), 0.0, False, LINK_SIGMA)
        mx, my, _, vyy, _ = pooled.moments()
        corr = pooled.correlation()
        structured = corr >= MIN_CORRELATION
        scale = math.exp(pooled.log_ratio()) if structured else 1.0
        shift = my - scale * mx
        rms = pooled.rms(scale, shift)
        parts = [self.pooled(keep, b) for b in range(BLOCKS * BLOCKS)]
        means = [p.moments()[:2] for p in parts if p.n]
        sigma = max(self._sigma(keep), RATIO_DISAGREEMENT * rms / math.sqrt(vyy)) if structured else LINK_SIGMA
        return Link(scale, shift, corr, sum(keep), len(self.frames), rms, structured, sigma, mx, my, means)


@dataclass(frozen=True)
class Anchor:
    """A segment's fit to known distances in its frames: inverse depth ``t ~ scale * x + shift``
    (``x`` its values at the points), ``sigma`` the scale's relative uncertainty (None: the points
    fix no scale, only a level); ``mean_x``, ``mean_t`` the points' means, ``spread`` the
    uncertainty of ``mean_t`` (the residual over the root of the points' count)."""

    scale: float | None
    sigma: float | None
    mean_x: float
    mean_t: float
    spread: float


def align_segments(links: list[Link], anchors: dict[int, Anchor] | None = None,
                   prior_sigma: float = PRIOR_SIGMA, shift_prior_sigma: float = SHIFT_PRIOR_SIGMA
                   ) -> list[tuple[float, float]]:
    """Scale and shift of each segment in the shot's common terms, from the fit of each overlap
    (``links[j - 1]``: segment ``j`` against segment ``j - 1``).

    Two least-squares solves over every link and every segment (:func:`_chain_solve`). The log
    scales ``u``: ``sum_j (u_j - u_{j-1} - log scale_j)^2 / sigma_j^2 + sum_j u_j^2 / prior_sigma^2``
    (``sigma_j`` the link's uncertainty; a link without structure drops out), then less their
    mean (geometric mean of the scales 1). The shifts likewise, from the difference of the two
    segments' means on each overlap under those scales. The second term of each ties a segment
    to its own normalisation (the method's output spans [-1, 1] in every segment): the links'
    errors cannot add up along the chain over more than about ``prior_sigma / sigma`` links,
    while links as exact as the data allow barely feel it.

    ``anchors``: segment -> its :class:`Anchor`, a fit to known distances in its own frames.
    Those segments are held at their fit as firmly as it is sure (a scale where the points fix
    one, the level of inverse depth at the points in any case), the others tied to the anchors'
    mean scale instead of to 1; the common terms are then inverse depth in the points' unit,
    and the scale in real units holds along the whole shot, not only where most points are."""
    m = len(links) + 1
    anchors = anchors or {}
    scaled = {j: k for j, k in anchors.items() if k.scale is not None}
    scale0 = math.exp(float(np.mean([math.log(k.scale) for k in scaled.values()]))) if scaled else 1.0
    log_targets, log_prior = np.full(m, math.log(scale0)), np.full(m, prior_sigma**-2)
    for j, k in scaled.items():
        log_targets[j], log_prior[j] = math.log(k.scale), log_prior[j] + max(k.sigma, ANCHOR_SIGMA) ** -2
    u = _chain_solve([math.log(link.scale) for link in links],
                     [link.sigma**-2 if link.structured else 0.0 for link in links], log_prior, log_targets)
    if not scaled:
        u -= u.mean()
    a = np.exp(u)
    shift_targets, shift_prior = np.zeros(m), np.full(m, (shift_prior_sigma * scale0) ** -2)
    if anchors:
        shift_targets[:] = float(np.mean([k.mean_t - a[j] * k.mean_x for j, k in anchors.items()]))
    for j, k in anchors.items():  # the level at the points: t = a_j * x + b_j at their means
        shift_targets[j] = k.mean_t - a[j] * k.mean_x
        shift_prior[j] += max(k.spread, ANCHOR_SIGMA * scale0 * 0.01) ** -2
    steps = [a[j - 1] * link.mean_y - a[j] * link.mean_x for j, link in enumerate(links, start=1)]
    weights = [link.shift_sigma(a[j - 1], a[j]) ** -2 for j, link in enumerate(links, start=1)]
    b = _chain_solve(steps, weights, shift_prior, shift_targets)
    return [(float(aj), float(bj)) for aj, bj in zip(a, b)]


def _chain_solve(steps: list[float], weights: list[float], prior: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``v [M]`` minimising ``sum_j w_j (v_j - v_{j-1} - step_j)^2 + sum_j prior_j (v_j - target_j)^2``."""
    lhs = np.diag(np.asarray(prior, np.float64))  # [M, M], tridiagonal
    rhs = np.asarray(prior, np.float64) * np.asarray(targets, np.float64)
    for j, (d, w) in enumerate(zip(steps, weights), start=1):
        lhs[j, j] += w
        lhs[j - 1, j - 1] += w
        lhs[j, j - 1] -= w
        lhs[j - 1, j] -= w
        rhs[j] += w * d
        rhs[j - 1] -= w * d
    return np.linalg.solve(lhs, rhs)


@dataclass
class SegmentRows:
    """A segment's prediction ``rows [count, H, W]``, showing frames ``first ..`` of its shot."""

    first: int
    rows: object

    @property
    def stop(self) -> int:
        return self.first + len(self.rows)


def fit_window(prev: SegmentRows, cur: SegmentRows) -> tuple[int, int]:
    """The frames (of the shot) on which ``cur`` is fitted onto ``prev`` and blended with it:
    the middle half of their overlap (``[first, stop)``, at least one frame)."""
    lo, hi = cur.first, prev.stop
    quarter = (hi - lo) // 4
    return lo + quarter, max(hi - quarter, lo + quarter + 1)


def _weight(seg: list[SegmentRows], j: int, frames: np.ndarray) -> np.ndarray:
    """Segment ``j``'s blending weight at ``frames`` (of the shot): 0 before the middle of its
    overlap with the segment before, ramping up across it, down across the middle of the
    overlap with the segment after, 0 after it, 1 in between."""
    w = np.ones(len(frames))
    if j > 0:
        lo, hi = fit_window(seg[j - 1], seg[j])
        w = np.minimum(w, (frames - lo + 1) / (hi - lo + 1))
    if j + 1 < len(seg):
        lo, hi = fit_window(seg[j], seg[j + 1])
        w = np.minimum(w, (hi - frames) / (hi - lo + 1))
    return np.clip(w, 0.0, 1.0)


def compose(seg: list[SegmentRows], affines: list[tuple[float, float]], f0: int, f1: int) -> np.ndarray:
    """Frames ``f0 .. f1 - 1`` of the shot: float32 ``[f1 - f0, H, W]``, the weighted mean of
    ``a * x + b`` over the segments showing each frame."""
    frames = np.arange(f0, f1)
    acc = total = None
    for j, (part, (a, b)) in enumerate(zip(seg, affines)):
        lo, hi = max(f0, part.first), min(f1, part.stop)
        if lo >= hi:
            continue
        w = _weight(seg, j, frames[lo - f0 : hi - f0]).astype(np.float32)[:, None, None]
        if not w.any():
            continue  # outside this segment's blend: its rows are not read
        x = np.asarray(part.rows[lo - part.first : hi - part.first], np.float32)
        if acc is None:
            acc = np.zeros((f1 - f0, *x.shape[1:]), np.float32)
            total = np.zeros((f1 - f0, 1, 1), np.float32)
        acc[lo - f0 : hi - f0] += w * (np.float32(a) * x + np.float32(b))
        total[lo - f0 : hi - f0] += w
    return acc / total


def shot_range(seg: list[SegmentRows], affines: list[tuple[float, float]], f0: int, f1: int) -> tuple[float, float]:
    """Min and max of the composed frames ``f0 .. f1 - 1`` of the shot (read by chunks)."""
    lo, hi = float("inf"), float("-inf")
    for c0 in range(f0, f1, CHUNK):
        part = compose(seg, affines, c0, min(f1, c0 + CHUNK))
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    return lo, hi


def write_range(seg: list[SegmentRows], affines: list[tuple[float, float]], frames: range, value_range, write) -> None:
    """The composed ``frames`` of the shot, re-normalised from ``value_range`` (the whole shot's
    min and max) to [-1, 1] (a constant shot to 0), handed to ``write(rows: slice, values)``
    chunk by chunk. Each frame is composed on its own: any split of the shot gives the same rows."""
    lo, hi = value_range
    for c0 in range(frames.start, frames.stop, CHUNK):
        part = compose(seg, affines, c0, min(frames.stop, c0 + CHUNK))
        write(slice(c0, c0 + len(part)), np.zeros_like(part) if hi <= lo else (part - lo) / (hi - lo) * 2.0 - 1.0)


def write_shot(seg: list[SegmentRows], affines: list[tuple[float, float]], write) -> tuple[float, float]:
    """The composed shot re-normalised to [-1, 1] (a constant shot to 0), handed to
    ``write(rows: slice, values)`` chunk by chunk; returns the composed values' min and max."""
    count = seg[-1].stop
    lo, hi = shot_range(seg, affines, 0, count)
    write_range(seg, affines, range(0, count), (lo, hi), write)
    return lo, hi
