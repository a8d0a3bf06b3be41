"""Known distances: points of a video whose depth the user measured (``--depth-points FILE``).

A CSV (or tab-separated) file, one point per line: ``frame, x, y, depth``. ``frame`` is the
frame number in the input (0-based, like a cut list's), ``x`` and ``y`` the point's column and
row in the input's pixels, ``depth`` its distance in any unit (metres, feet, ...). ``#`` starts
a comment; a first line of words (a header) is skipped. The outputs then hold depth in that
unit: per shot, the prediction's inverse depth is fitted to ``1 / depth`` at the points
(:func:`rollingdepth.io.exports.fit_inverse_depth`), as eval-depth fits a prediction to ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DepthPoints", "read_depth_points"]


@dataclass(frozen=True)
class DepthPoints:
    """Points with known depth: ``frame`` (int ``[K]``), ``x``, ``y`` (input pixels), ``depth`` (> 0)."""

    frame: np.ndarray
    x: np.ndarray
    y: np.ndarray
    depth: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def in_frames(self, first: int, stop: int) -> np.ndarray:
        """Indices of the points in frames ``first .. stop - 1``."""
        return np.flatnonzero((self.frame >= first) & (self.frame < stop))

    def values(self, idx: np.ndarray, rows_of, input_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """A prediction at the points ``idx``: ``rows_of(frame)`` gives frame ``frame``'s ``[H, W]``
        at the processing ``size`` (``input_size``: the input's, the points' pixels; the nearest pixel)."""
        (h_in, w_in), (h, w) = input_size, size
        out = np.empty(len(idx))
        for frame in np.unique(self.frame[idx]):
            row = np.asarray(rows_of(int(frame)))  # [H, W]
            for k in np.flatnonzero(self.frame[idx] == frame):
                col = int(np.clip(np.floor((self.x[idx[k]] + 0.5) * w / w_in), 0, w - 1))
                line = int(np.clip(np.floor((self.y[idx[k]] + 0.5) * h / h_in), 0, h - 1))
                out[k] = row[line, col]
        return out


def read_depth_points(path: str | Path) -> DepthPoints:
    """The points of ``path``; anything unreadable raises one ``ValueError`` naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"depth points {path}: cannot read it ({exc})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f.strip() for f in text.replace("\t", ",").split(",")]
        if not rows and not _number(fields[0]):
            continue  # a header
        where = f"depth points {path.name}, line {n}"
        if len(fields) != 4 or not all(_number(f) for f in fields):
            raise ValueError(f"{where}: expected four numbers: frame, x, y, depth (got {text!r})")
        frame, x, y, depth = (float(f) for f in fields)
        if frame != int(frame) or frame < 0:
            raise ValueError(f"{where}: the frame must be a whole number >= 0 (got {fields[0]})")
        if x < 0 or y < 0:
            raise ValueError(f"{where}: x and y are pixels of the input, >= 0 (got {fields[1]}, {fields[2]})")
        if not depth > 0:
            raise ValueError(f"{where}: the depth must be > 0 (got {fields[3]})")
        rows.append((int(frame), x, y, depth))
    if not rows:
        raise ValueError(f"depth points {path}: no points (lines of frame, x, y, depth)")
    data = np.array(rows, dtype=np.float64)
    return DepthPoints(data[:, 0].astype(np.int64), data[:, 1], data[:, 2], data[:, 3])


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
