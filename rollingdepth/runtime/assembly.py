"""A long shot's segments made into one depth video.

Each segment (:class:`~rollingdepth.runtime.plan.Unit`) ran the method on its own, so each has
its own scale and shift. Consecutive segments share frames: the later one is fitted onto the
earlier on those frames (one scale and shift, least squares over every pixel they share), the
fits are chained from the first segment on, and across each overlap the two are blended with
weights that ramp linearly from one to the other. The shot is then re-normalised to [-1, 1] as
a whole, like one run of the method.

Only sums over the shared pixels (:class:`OverlapStats`) are needed for the chain, so that the
segments of one shot can also be computed apart (other processes) and joined from those sums.
Arrays are read by rows (NumPy arrays or :class:`~rollingdepth.runtime.stores.NpyFile`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["OverlapStats", "SegmentRows", "chain", "compose", "shot_range", "write_range", "write_shot"]

CHUNK = 32  # frames read at a time


@dataclass
class OverlapStats:
    """Sums over the pixels two consecutive segments share: ``x`` the later segment's values,
    ``y`` the earlier's. Enough for the least-squares fit ``y ~ a x + b`` and its residual."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0

    @classmethod
    def of(cls, x_rows, y_rows) -> "OverlapStats":
        """The sums over the frames ``x_rows[i]`` and ``y_rows[i]`` (the same frames of the video)."""
        if len(x_rows) != len(y_rows):
            raise ValueError(f"x_rows and y_rows: {len(x_rows)} and {len(y_rows)} frames; they must show the same frames")
        s = cls()
        for i in range(0, len(x_rows), CHUNK):
            x = np.asarray(x_rows[i : i + CHUNK], np.float64)
            y = np.asarray(y_rows[i : i + CHUNK], np.float64)
            s.n += x.size
            s.sx, s.sy = s.sx + float(x.sum()), s.sy + float(y.sum())
            s.sxx, s.sxy, s.syy = s.sxx + float((x * x).sum()), s.sxy + float((x * y).sum()), s.syy + float((y * y).sum())
        return s

    def fit(self) -> tuple[float, float]:
        """``(a, b)`` minimising the squared error of ``a x + b`` against ``y``. Where ``x`` is
        constant, or the best scale is not positive (an inverse depth cannot flip), only the shift
        is fitted (``a = 1``)."""
        if self.n == 0:
            return 1.0, 0.0
        mx, my = self.sx / self.n, self.sy / self.n
        vxx = self.sxx / self.n - mx * mx
        cxy = self.sxy / self.n - mx * my
        if vxx <= 1e-12 * max(1.0, abs(self.sxx / self.n)) or cxy <= 0:
            return 1.0, my - mx
        a = cxy / vxx
        return a, my - a * mx

    def rms(self, a: float, b: float) -> float:
        """Root mean square of ``y - (a x + b)`` over the shared pixels."""
        if self.n == 0:
            return 0.0
        sq = (self.syy - 2 * a * self.sxy - 2 * b * self.sy + a * a * self.sxx + 2 * a * b * self.sx
              + self.n * b * b)
        return math.sqrt(max(sq, 0.0) / self.n)

    def to_json(self) -> dict:
        return asdict(self)


def chain(stats: list[OverlapStats]) -> list[tuple[float, float]]:
    """Scale and shift of each segment in the first one's terms, from the sums of each overlap
    (``stats[j - 1]``: segment ``j`` against segment ``j - 1``)."""
    affines = [(1.0, 0.0)]
    for s in stats:
        a, b = s.fit()
        pa, pb = affines[-1]
        affines.append((pa * a, pa * b + pb))
    return affines


@dataclass
class SegmentRows:
    """A segment's prediction ``rows [count, H, W]``, showing frames ``first ..`` of its shot."""

    first: int
    rows: object

    @property
    def stop(self) -> int:
        return self.first + len(self.rows)


def _weight(seg: list[SegmentRows], j: int, frames: np.ndarray) -> np.ndarray:
    """Segment ``j``'s blending weight at ``frames`` (of the shot): ramps up across the overlap with
    the segment before, down across the overlap with the one after, 1 in between."""
    w = np.ones(len(frames))
    if j > 0:
        overlap = seg[j - 1].stop - seg[j].first
        w = np.minimum(w, (frames - seg[j].first + 1) / (overlap + 1))
    if j + 1 < len(seg):
        overlap = seg[j].stop - seg[j + 1].first
        w = np.minimum(w, (seg[j].stop - frames) / (overlap + 1))
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
        x = np.asarray(part.rows[lo - part.first : hi - part.first], np.float32)
        w = _weight(seg, j, frames[lo - f0 : hi - f0]).astype(np.float32)[:, None, None]
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
