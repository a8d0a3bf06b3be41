"""Stereo 3D views from one picture and its depth: two eyes, packed for players.

Disparity comes from the shot's normalised inverse depth ``near`` in [0, 1] (1 the nearest):
``D = strength / 100 * W * (near - convergence)`` pixels, ``strength`` the largest disparity as a
percentage of the width, ``convergence`` the depth that sits on the screen plane (0 the
farthest: everything in front of the screen; 1 the nearest: everything behind it). Each eye
gets half: the left eye's picture is the source moved right by ``ceil(D / 2)``, the right eye's
left by ``floor(D / 2)`` (:func:`eye_shifts`), so that in front of the screen (``D > 0``) the
left eye's image lies to the right of the right eye's (crossed disparity), as in a real pair.

Each eye is a forward warp with a depth test (:func:`warp`): every source pixel goes to its
moved column, and where several land on one, the nearest wins. The left eye's shift grows with
nearness and the right eye's shrinks with it, both monotonic, so the nearest of the pixels
landing on a column is the leftmost of them in the left eye and the rightmost in the right eye:
the depth test is one integer scatter (a minimum or maximum of source columns), with no depth
keys and no sort. A column no pixel reached is disoccluded background: it lies just left of a
nearer surface that moved right (the left eye) or just right of one that moved left (the right
eye), so it takes the source of the nearest reached column on that side, the background's,
never smeared from the foreground's edge; at the frame's edge, where that side has none, the
other side's. Nothing wraps around: pixels moved out of the frame are dropped.

One frame at a time on the host, NumPy and OpenCV in 32-bit integers: the work is a few passes
of integer scatter and gather per eye, bound by memory, and runs beside the decoder and the
encoder that the host runs anyway (``docs/outputs.md``, "Stereo 3D").
"""

from __future__ import annotations

import bisect
import functools

import numpy as np

__all__ = ["ANAGLYPH_LEFT", "ANAGLYPH_RIGHT", "DEFAULT_CONVERGENCE", "DEFAULT_STRENGTH", "LAYOUTS", "LAYOUT_TAGS",
           "StereoFrames", "disparity", "eye_shifts", "pack", "packed_size", "render_eyes", "shot_ranges", "warp"]

LAYOUTS = ("half-sbs", "full-sbs", "half-tab", "full-tab", "anaglyph")
DEFAULT_STRENGTH = 2.5  # percent of the width between the nearest and the farthest depth's disparity
DEFAULT_CONVERGENCE = 0.5  # the middle of the shot's depth on the screen plane: half in front, half behind
# the tags in the file names by which players find the layout: Kodi and Jellyfin read "3D" with hsbs, fsbs,
# htab or ftab; DeoVR, HereSphere, SKYBOX and other VR players read LR (side by side) or TB (top and bottom)
LAYOUT_TAGS = {"half-sbs": "3D_hsbs_LR", "full-sbs": "3D_fsbs_LR", "half-tab": "3D_htab_TB", "full-tab": "3D_ftab_TB",
               "anaglyph": "anaglyph"}
NEAR_PERCENTILES = (1.0, 99.0)  # a shot's inverse depth between these percentiles spans near 0..1
_RANGE_FRAMES = 32  # frames sampled per shot for its range

# Dubois' least-squares red-cyan matrices (linear RGB of each eye -> linear RGB of the anaglyph)
ANAGLYPH_LEFT = ((0.456, 0.500, 0.176), (-0.040, -0.038, -0.016), (-0.015, -0.021, -0.005))
ANAGLYPH_RIGHT = ((-0.043, -0.088, -0.002), (0.378, 0.734, -0.018), (-0.072, -0.113, 1.226))


def disparity(near: np.ndarray, strength: float, convergence: float) -> np.ndarray:
    """Disparity in pixels, float32 ``[H, W]`` (positive: in front of the screen), of ``near [H, W]``
    in [0, 1], ``strength`` in percent of the width, ``convergence`` in [0, 1]."""
    if not 0.0 <= convergence <= 1.0:
        raise ValueError(f"convergence: {convergence}; it must lie in [0, 1] (0 the farthest depth, 1 the nearest)")
    if strength < 0:
        raise ValueError(f"strength: {strength}; it must be 0 or more (percent of the width)")
    scale = np.float32(strength / 100.0 * near.shape[-1])
    return (np.asarray(near, np.float32) - np.float32(convergence)) * scale


def eye_shifts(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each eye's shift to the right in whole pixels (int32) of the disparity ``d``: the left eye
    ``ceil(D / 2)``, the right eye ``-floor(D / 2)``, ``D = round(d)``; between them exactly ``D``
    (within half a pixel of ``d``), each monotonic in ``d``."""
    total = np.rint(d).astype(np.int32)
    half = total >> 1  # floor(D / 2), also below 0
    return total - half, -half


def warp(rgb: np.ndarray, shift: np.ndarray, left_eye: bool) -> np.ndarray:
    """uint8 ``rgb [H, W, C]`` with each pixel moved right by ``shift [H, W]`` (int32, growing with
    nearness for the left eye, shrinking for the right eye): where pixels meet, the nearest
    wins; holes take the background side's neighbour. Returns ``[H, W, C]``."""
    import cv2

    h, w = shift.shape
    cols = _grid(h, w, 1)  # [H, W] each pixel's column
    target = shift + cols  # [H, W] the column each pixel goes to
    slot = target + _grid(h, w, 0, np.intp, w)  # [H, W] the output pixel it goes to
    slot[target.view(np.uint32) >= w] = h * w  # off the frame (below 0 is above w unsigned): a spare slot
    empty = w if left_eye else -1
    winner = np.full(h * w + 1, empty, np.int32)  # per output pixel: its source column
    reduce = np.minimum if left_eye else np.maximum  # the leftmost or the rightmost, the nearest either way
    reduce.at(winner, slot.ravel(), cols.ravel())
    winner = winner[:-1].reshape(h, w)
    _fill_holes(winner, empty, left_eye)
    return cv2.remap(rgb, winner.astype(np.float32), _grid(h, w, 0, np.float32), cv2.INTER_NEAREST)


def _fill_holes(winner: np.ndarray, empty: int, left_eye: bool) -> None:
    """Give each run of unreached columns (``empty`` in ``winner [H, W]``, in place) the source of the
    reached column beside it on the background side (left in the left eye), or at the frame's
    edge the other side's; a row with nothing reached keeps its own columns. Works in the holes'
    number, not the frame's: they are a few percent of it."""
    h, w = winner.shape
    at = np.flatnonzero(winner.ravel() == empty)  # the holes, in order
    if not len(at):
        return
    row, col = np.divmod(at, w)
    new_run = np.ones(len(at), bool)
    new_run[1:] = (np.diff(at) != 1) | (col[1:] == 0)  # a run ends at a reached column or at its row's end
    starts = np.flatnonzero(new_run)
    lengths = np.diff(np.append(starts, len(at)))
    first, rows = col[starts], row[starts]
    before, after = first - 1, first + lengths  # the reached columns beside each run (-1 or w: the frame's edge)
    side = np.where(before >= 0, before, after) if left_eye else np.where(after < w, after, before)
    values = np.where((before < 0) & (after >= w), -1, winner[rows, np.clip(side, 0, w - 1)])
    fill = np.repeat(values, lengths)
    own = fill < 0  # nothing reached in the row: its own columns
    fill[own] = col[own]
    winner.ravel()[at] = fill


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int, axis: int, dtype=np.int32, step: int = 1) -> np.ndarray:
    """``[H, W]`` of each pixel's row (``axis`` 0) or column (1), times ``step``; kept per size, read only."""
    line = np.arange(h if axis == 0 else w, dtype=dtype) * step
    grid = np.ascontiguousarray(np.broadcast_to(line[:, None] if axis == 0 else line, (h, w)))
    grid.flags.writeable = False
    return grid


def render_eyes(rgb: np.ndarray, near: np.ndarray, strength: float, convergence: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Left and right eye, uint8 ``[H, W, 3]``, of ``rgb [H, W, 3]`` with ``near [H, W]`` in [0, 1]."""
    left, right = eye_shifts(disparity(near, strength, convergence))
    return warp(rgb, left, left_eye=True), warp(rgb, right, left_eye=False)


def pack(left: np.ndarray, right: np.ndarray, layout: str) -> np.ndarray:
    """The two eyes (uint8 ``[H, W, 3]``) in one picture: side by side (left eye left) or top
    and bottom (left eye on top), at full size or halved along the packing (``half-*``: the
    source's size, as 3D TVs expect), or a red-cyan anaglyph."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r}; one of {', '.join(LAYOUTS)}")
    if layout == "anaglyph":
        return _anaglyph(left, right)
    axis = 1 if layout.endswith("sbs") else 0
    if layout.startswith("half"):
        left, right = _halve(left, axis), _halve(right, axis)
    return np.concatenate([left, right], axis=axis)


def packed_size(layout: str, size: tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` of a ``layout`` frame for eyes of ``size``."""
    h, w = size
    return {"full-sbs": (h, 2 * w), "full-tab": (2 * h, w), "half-sbs": (h, w // 2 * 2),
            "half-tab": (h // 2 * 2, w)}.get(layout, (h, w))


def _halve(eye: np.ndarray, axis: int) -> np.ndarray:
    """uint8 ``eye [H, W, C]`` at half its width (``axis`` 1) or height (0), pairs averaged (bilinear at
    exactly half: each output pixel midway between two)."""
    import cv2

    h, w = eye.shape[:2]
    size = (w // 2, h) if axis == 1 else (w, h // 2)
    return cv2.resize(eye[: h // 2 * 2 if axis == 0 else h, : w // 2 * 2 if axis == 1 else w], size,
                      interpolation=cv2.INTER_LINEAR)


def _anaglyph(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Dubois' red-cyan anaglyph of uint8 eyes, computed in linear light."""
    lin = _TO_LINEAR[left] @ np.asarray(ANAGLYPH_LEFT, np.float32).T + \
        _TO_LINEAR[right] @ np.asarray(ANAGLYPH_RIGHT, np.float32).T
    codes = np.clip(lin * (_LINEAR_STEPS - 1) + 0.5, 0, _LINEAR_STEPS - 1).astype(np.int32)
    return _TO_SRGB[codes]


_LINEAR_STEPS = 4096  # linear light quantised for the way back to sRGB (finer than 8 bits in the darks)


def _srgb_tables() -> tuple[np.ndarray, np.ndarray]:
    """sRGB code -> linear light (float32), and quantised linear light -> sRGB code (uint8)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    to_linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    lin = np.arange(_LINEAR_STEPS, dtype=np.float64) / (_LINEAR_STEPS - 1)
    to_srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return to_linear.astype(np.float32), np.round(to_srgb * 255).astype(np.uint8)


_TO_LINEAR, _TO_SRGB = _srgb_tables()


# ----------------------------------------------------------------------------- a video's frames
def shot_ranges(prediction: np.ndarray, firsts: tuple[int, ...]) -> list[tuple[float, float]]:
    """Each shot's inverse-depth range for :class:`StereoFrames` (``prediction [N, h, w]``, the
    shots starting at ``firsts``): the :data:`NEAR_PERCENTILES` of up to 32 of its frames."""
    ends = (*firsts[1:], len(prediction))
    ranges = []
    for first, end in zip(firsts, ends):
        picks = np.unique(np.linspace(first, end - 1, min(_RANGE_FRAMES, end - first)).round().astype(int))
        sample = np.asarray(prediction[picks][:, ::4, ::4], dtype=np.float32)
        lo, hi = np.percentile(sample, NEAR_PERCENTILES)
        ranges.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return ranges


class StereoFrames:
    """The eyes of a video's frames, one frame at a time: the input frame (uint8 ``[H, W, 3]``) and
    its prediction (``[h, w]``, any size) with its shot's range (:func:`shot_ranges`) -> uint8
    frames of each layout. The eyes of a frame are rendered once for ``layouts`` writers (each in
    its own thread) and dropped when they all have had them."""

    def __init__(self, strength: float, convergence: float, ranges: list[tuple[float, float]],
                 firsts: tuple[int, ...], layouts: int = 1):
        import threading

        disparity(np.zeros((1, 1), np.float32), strength, convergence)  # checks the settings
        self.strength, self.convergence, self.ranges, self.firsts = strength, convergence, ranges, firsts
        self._layouts, self._lock, self._shared = layouts, threading.Lock(), {}  # index -> [eyes, writers left]

    def eyes(self, index: int, image: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left and right eye, uint8 ``[H, W, 3]``, of frame ``index``: the disparity is worked out at
        the prediction's size and resized to the frame's (bilinear)."""
        import cv2

        lo, hi = self.ranges[bisect.bisect_right(self.firsts, index) - 1]
        near = np.clip((np.asarray(prediction, np.float32) - np.float32(lo)) / np.float32(hi - lo), 0, 1)
        d = disparity(near, self.strength, self.convergence) * np.float32(image.shape[1] / near.shape[1])
        if d.shape != image.shape[:2]:
            d = cv2.resize(d, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        left, right = eye_shifts(d)
        return warp(image, left, left_eye=True), warp(image, right, left_eye=False)

    def frame(self, index: int, image: np.ndarray, prediction: np.ndarray, layout: str) -> np.ndarray:
        """Frame ``index`` in ``layout``, uint8 ``[H', W', 3]``."""
        with self._lock:  # the first layout's writer renders the eyes; the others wait for them
            entry = self._shared.get(index)
            if entry is None:
                entry = self._shared[index] = [self.eyes(index, image, prediction), self._layouts]
            entry[1] -= 1
            if entry[1] == 0:
                del self._shared[index]
        return pack(*entry[0], layout)
