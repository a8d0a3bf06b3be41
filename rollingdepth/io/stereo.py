"""Stereo 3D views from one picture and its depth: two eyes, packed for players.

Disparity comes from the shot's normalised inverse depth ``near`` in [0, 1] (1 the nearest):
``D = strength / 100 * W * (near - convergence)`` pixels, ``strength`` the largest disparity as a
percentage of the width, ``convergence`` the depth that sits on the screen plane (0 the
farthest: everything in front of the screen; 1 the nearest: everything behind it). Each eye
gets half: the left eye's picture is the source moved by ``+D / 2``, the right eye's by
``-D / 2``, so that in front of the screen (``D > 0``) the left eye's image lies to the right of
the right eye's (crossed disparity), as in a real pair.

Each eye is a forward warp with a depth test (:func:`warp`): every source pixel goes to its
moved column, and where several land on one, the nearest wins. The eyes' shifts grow with
nearness (the left eye's) or shrink with it (the right eye's), and :func:`eye_shifts` splits the
rounded disparity so that they stay monotonic; so the nearest of the pixels landing on a column
is the leftmost of them in the left eye and the rightmost in the right eye, and the depth test
is one integer scatter (a minimum or maximum of source columns), no sort and no depth keys. The
columns no pixel reached (disoccluded background) are filled along their row from the
**farther** of the two nearest reached columns (the background side, not smeared from the
foreground's edge); a hole touching the frame's edge takes its one neighbour. Nothing wraps
around: pixels moved out of the frame are dropped. Everything is batched torch on the device the
tensors are on, in 32-bit integers.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ANAGLYPH_LEFT", "ANAGLYPH_RIGHT", "LAYOUTS", "LAYOUT_TAGS", "StereoFrames", "disparity", "eye_shifts", "pack",
           "packed_size", "render_eyes", "shot_ranges", "warp"]

LAYOUTS = ("half-sbs", "full-sbs", "half-tab", "full-tab", "anaglyph")
DEFAULT_STRENGTH = 2.5  # percent of the width between the nearest and the farthest depth's disparity
DEFAULT_CONVERGENCE = 0.5  # the middle of the shot's depth on the screen plane: half in front, half behind

# Dubois' least-squares red-cyan matrices (linear RGB of each eye -> linear RGB of the anaglyph)
ANAGLYPH_LEFT = ((0.456, 0.500, 0.176), (-0.040, -0.038, -0.016), (-0.015, -0.021, -0.005))
ANAGLYPH_RIGHT = ((-0.043, -0.088, -0.002), (0.378, 0.734, -0.018), (-0.072, -0.113, 1.226))


def disparity(near: torch.Tensor, strength: float, convergence: float) -> torch.Tensor:
    """Disparity in pixels ``[B, H, W]`` (positive: in front of the screen) of ``near [B, H, W]``
    in [0, 1], ``strength`` in percent of the width, ``convergence`` in [0, 1]."""
    if not 0.0 <= convergence <= 1.0:
        raise ValueError(f"convergence: {convergence}; it must lie in [0, 1] (0 the farthest depth, 1 the nearest)")
    if strength < 0:
        raise ValueError(f"strength: {strength}; it must be 0 or more (percent of the width)")
    return strength / 100.0 * near.shape[-1] * (near.float() - convergence)


def eye_shifts(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each eye's shift in whole pixels (int32, ``[B, H, W]``) of the disparity ``d``: the left
    eye ``ceil(D / 2)``, the right eye ``-floor(D / 2)``, ``D = round(d)``; between them exactly
    ``D`` (within half a pixel of ``d``), and each monotonic in ``d``."""
    total = torch.round(d).to(torch.int32)
    half = torch.div(total, 2, rounding_mode="floor")
    return total - half, -half


def warp(rgb: torch.Tensor, near: torch.Tensor, shift: torch.Tensor, nearest_first: bool) -> torch.Tensor:
    """``rgb [B, H, W, C]`` with each pixel moved right by ``shift [B, H, W]`` (int, monotonic in
    ``near [B, H, W]``, larger nearer): where pixels meet, the leftmost source pixel wins when
    ``nearest_first`` (the shift grows with nearness: the left eye), else the rightmost (the right
    eye), which is the nearest; holes filled from the farther side of their row. Returns
    ``[B, H, W, C]`` of ``rgb``'s dtype."""
    b, h, w, c = rgb.shape
    dev = rgb.device
    cols = torch.arange(w, device=dev, dtype=torch.int32)
    target = cols + shift.to(torch.int32)  # [B, H, W]
    rows = torch.arange(b * h, device=dev, dtype=torch.int32).view(b, h, 1) * w
    slot = torch.where((target >= 0) & (target < w), rows + target, b * h * w)  # off the frame: a spare slot
    empty = w if nearest_first else -1
    winner = torch.full((b * h * w + 1,), empty, dtype=torch.int32, device=dev)
    winner.scatter_reduce_(0, slot.view(-1).long(), cols.expand(b, h, w).reshape(-1),
                           reduce="amin" if nearest_first else "amax")
    winner = winner[:-1].view(b, h, w)
    filled = winner != empty
    source = torch.where(filled, winner, 0)  # [B, H, W] the winning source column
    nearness = torch.gather(near, 2, source.long())  # for the hole fill: smaller is farther
    source = _fill_holes(source, nearness, filled)
    flat = (rows + source).view(-1).long()  # [B*H*W] source pixel of each output pixel
    return rgb.reshape(b * h * w, c).index_select(0, flat).view(b, h, w, c)


def _fill_holes(source: torch.Tensor, nearness: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """``source [B, H, W]`` with each unfilled column taking the source of the nearest filled
    column to its left or right, whichever is farther (smaller ``nearness``); at an edge, the one
    there is. A row with nothing filled keeps its columns."""
    w = source.shape[-1]
    idx = torch.arange(w, device=source.device, dtype=torch.int32).expand_as(source)
    left = torch.cummax(torch.where(filled, idx, -1), dim=-1).values  # last filled column at or before
    right = w - 1 - torch.cummax(torch.where(filled, w - 1 - idx, -1).flip(-1), dim=-1).values.flip(-1)
    has_left, has_right = left >= 0, right <= w - 1
    left_c, right_c = left.clamp(0, w - 1).long(), right.clamp(0, w - 1).long()
    far_left = torch.gather(nearness, -1, left_c) <= torch.gather(nearness, -1, right_c)
    pick = torch.where(has_left & (far_left | ~has_right), left_c, torch.where(has_right, right_c, idx.long()))
    return torch.where(filled, source, torch.gather(source, -1, pick))


def render_eyes(rgb: torch.Tensor, near: torch.Tensor, strength: float, convergence: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right eye ``[B, H, W, C]`` of ``rgb [B, H, W, C]`` with ``near [B, H, W]`` in [0, 1]."""
    left, right = eye_shifts(disparity(near, strength, convergence))
    return warp(rgb, near, left, nearest_first=True), warp(rgb, near, right, nearest_first=False)


def pack(left: torch.Tensor, right: torch.Tensor, layout: str) -> torch.Tensor:
    """The two eyes (uint8 ``[B, H, W, 3]``) in one picture: side by side (left eye left) or top
    and bottom (left eye on top), at full size or halved along the packing (``half-*``: the
    source's size, as 3D TVs expect), or a red-cyan anaglyph."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r}; one of {', '.join(LAYOUTS)}")
    if layout == "anaglyph":
        return _anaglyph(left, right)
    dim = 2 if layout.endswith("sbs") else 1
    if layout.startswith("half"):
        left, right = _halve(left, dim), _halve(right, dim)
    return torch.cat([left, right], dim=dim)


def _halve(eye: torch.Tensor, dim: int) -> torch.Tensor:
    """uint8 ``eye [B, H, W, C]`` at half its width (``dim`` 2) or height (1), by area (pairs averaged, rounded)."""
    n = eye.shape[dim] // 2 * 2
    pairs = eye.narrow(dim, 0, n).unflatten(dim, (n // 2, 2)).to(torch.int16)
    first, second = pairs.unbind(dim + 1)
    return ((first + second + 1) // 2).to(eye.dtype)


def _anaglyph(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Dubois' red-cyan anaglyph of uint8 eyes, computed in linear light."""
    lin_l, lin_r = _to_linear(left), _to_linear(right)
    ml = torch.tensor(ANAGLYPH_LEFT, device=left.device)
    mr = torch.tensor(ANAGLYPH_RIGHT, device=left.device)
    out = (lin_l @ ml.T + lin_r @ mr.T).clamp(0, 1)
    return torch.round(_to_srgb(out) * 255).to(torch.uint8)


def _to_linear(x: torch.Tensor) -> torch.Tensor:
    v = x.float() / 255.0
    return torch.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _to_srgb(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v <= 0.0031308, v * 12.92, 1.055 * v.clamp(min=0) ** (1 / 2.4) - 0.055)


# ----------------------------------------------------------------------------- a video's frames
# the tags in the file names by which players find the layout: Kodi and Jellyfin read "3D" with hsbs, fsbs,
# htab or ftab; DeoVR, HereSphere, SKYBOX and other VR players read LR (side by side) or TB (top and bottom)
LAYOUT_TAGS = {"half-sbs": "3D_hsbs_LR", "full-sbs": "3D_fsbs_LR", "half-tab": "3D_htab_TB", "full-tab": "3D_ftab_TB",
               "anaglyph": "anaglyph"}
NEAR_PERCENTILES = (1.0, 99.0)  # a shot's inverse depth between these percentiles spans near 0..1
_RANGE_FRAMES = 32  # frames sampled per shot for its range


def packed_size(layout: str, size: tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` of a ``layout`` frame for eyes of ``size``."""
    h, w = size
    return {"full-sbs": (h, 2 * w), "full-tab": (2 * h, w), "half-sbs": (h, w // 2 * 2),
            "half-tab": (h // 2 * 2, w)}.get(layout, (h, w))


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
    its prediction (``[h, w]``, any size: resized to the frame's) with its shot's range
    (:func:`shot_ranges`) -> uint8 frames of each layout. On CUDA when there is one. The eyes of a
    frame are rendered once for ``layouts`` writers (each in its own thread) and dropped when
    they all have had them."""

    def __init__(self, strength: float, convergence: float, ranges: list[tuple[float, float]],
                 firsts: tuple[int, ...], layouts: int = 1, device: str | None = None):
        import threading

        disparity(torch.zeros(1, 1, 1), strength, convergence)  # checks the settings
        self.strength, self.convergence, self.ranges, self.firsts = strength, convergence, ranges, firsts
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._layouts, self._lock, self._shared = layouts, threading.Lock(), {}  # index -> [eyes, writers left]

    def eyes(self, index: int, image: np.ndarray, prediction: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Left and right eye, uint8 ``[1, H, W, 3]`` on the device, of frame ``index``."""
        import bisect

        lo, hi = self.ranges[bisect.bisect_right(self.firsts, index) - 1]
        rgb = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)[None]  # [1, H, W, 3]
        pred = torch.from_numpy(np.ascontiguousarray(prediction, dtype=np.float32)).to(self.device)[None, None]
        if pred.shape[-2:] != rgb.shape[1:3]:
            pred = torch.nn.functional.interpolate(pred, size=rgb.shape[1:3], mode="bilinear", align_corners=False)
        near = ((pred[:, 0] - lo) / (hi - lo)).clamp_(0, 1)  # [1, H, W]
        return render_eyes(rgb, near, self.strength, self.convergence)

    def frame(self, index: int, image: np.ndarray, prediction: np.ndarray, layout: str) -> np.ndarray:
        """Frame ``index`` in ``layout``, uint8 ``[H', W', 3]`` on the host."""
        with self._lock:  # the first layout's writer renders the eyes; the others wait for them
            entry = self._shared.get(index)
            if entry is None:
                entry = self._shared[index] = [self.eyes(index, image, prediction), self._layouts]
            entry[1] -= 1
            if entry[1] == 0:
                del self._shared[index]
        return pack(*entry[0], layout)[0].cpu().numpy()
