"""Stereo 3D views from one picture and its depth: two eyes, packed for players.

Disparity comes from the shot's normalised inverse depth ``near`` in [0, 1] (1 the nearest):
``D = strength / 100 * W * (near - convergence)`` pixels, ``strength`` the largest disparity as a
percentage of the width, ``convergence`` the depth that sits on the screen plane (0 the
farthest: everything in front of the screen; 1 the nearest: everything behind it). Each eye
gets half: the left eye's picture is the source moved by ``+D / 2``, the right eye's by
``-D / 2``, so that in front of the screen (``D > 0``) the left eye's image lies to the right of
the right eye's (crossed disparity), as in a real pair.

Each eye is a forward warp with a depth test (:func:`warp`): every source pixel goes to its
moved column, and where several land on one, the nearest wins (a scatter of
``(near, column)`` keys with a maximum, no ordering pass). The columns no pixel reached
(disoccluded background) are filled along their row from the **farther** of the two nearest
reached pixels (the background side, not smeared from the foreground's edge); a hole touching
the frame's edge takes its one neighbour. Nothing wraps around: pixels moved out of the frame
are dropped. Everything is batched torch on the device the tensors are on.
"""

from __future__ import annotations

import torch

__all__ = ["ANAGLYPH_LEFT", "ANAGLYPH_RIGHT", "LAYOUTS", "disparity", "pack", "render_eyes", "warp"]

LAYOUTS = ("half-sbs", "full-sbs", "half-tab", "full-tab", "anaglyph")
_DEPTH_STEPS = 65535  # near quantised to 16 bits for the depth test

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


def warp(rgb: torch.Tensor, near: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``rgb [B, H, W, C]`` with each pixel moved right by ``shift [B, H, W]`` (pixels, rounded),
    the nearest (``near [B, H, W]``, larger nearer) winning where pixels meet, holes filled from
    the farther side of their row. Returns ``[B, H, W, C]`` of ``rgb``'s dtype."""
    b, h, w, c = rgb.shape
    dev = rgb.device
    cols = torch.arange(w, device=dev)
    target = cols + torch.round(shift).long()  # [B, H, W]
    inside = (target >= 0) & (target < w)
    depth_key = torch.round(near.clamp(0, 1) * _DEPTH_STEPS).long()
    key = torch.where(inside, depth_key * w + cols, torch.full_like(target, -1))  # the depth test, then the column
    rows = torch.arange(b * h, device=dev).view(b, h, 1) * w
    flat = (rows + target.clamp(0, w - 1)).view(-1)  # [B*H*W] target pixel
    best = torch.full((b * h * w,), -1, dtype=torch.long, device=dev)
    best.scatter_reduce_(0, flat, key.view(-1), reduce="amax")
    best = best.view(b, h, w)
    filled = best >= 0
    source = torch.where(filled, best % w, 0)  # [B, H, W] the winning source column
    farness = torch.where(filled, best // w, _DEPTH_STEPS + 1)  # for the hole fill: smaller is farther
    source = _fill_holes(source, farness, filled)
    return torch.gather(rgb, 2, source.unsqueeze(-1).expand(b, h, w, c))


def _fill_holes(source: torch.Tensor, depth: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """``source [B, H, W]`` with each unfilled column taking the source of the nearest filled
    column to its left or right, whichever is farther (smaller ``depth``); at an edge, the one
    there is. A row with nothing filled keeps its columns."""
    w = source.shape[-1]
    idx = torch.arange(w, device=source.device).expand_as(source)
    left = torch.cummax(torch.where(filled, idx, -1), dim=-1).values  # last filled column at or before
    right = w - 1 - torch.cummax(torch.where(filled, w - 1 - idx, -1).flip(-1), dim=-1).values.flip(-1)
    has_left, has_right = left >= 0, right <= w - 1
    left_c, right_c = left.clamp(0, w - 1), right.clamp(0, w - 1)
    far_left = torch.gather(depth, -1, left_c) <= torch.gather(depth, -1, right_c)
    pick = torch.where(has_left & (far_left | ~has_right), left_c, torch.where(has_right, right_c, idx))
    return torch.where(filled, source, torch.gather(source, -1, pick))


def render_eyes(rgb: torch.Tensor, near: torch.Tensor, strength: float, convergence: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right eye ``[B, H, W, C]`` of ``rgb [B, H, W, C]`` with ``near [B, H, W]`` in [0, 1]."""
    d = disparity(near, strength, convergence)
    left = torch.round(d / 2)
    return warp(rgb, near, left), warp(rgb, near, left - torch.round(d))  # between them round(d): within half a pixel


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
    """``eye [B, H, W, C]`` at half its width (``dim`` 2) or height (1), by area (pairs averaged)."""
    x = eye.float()
    n = x.shape[dim] // 2 * 2
    x = x.narrow(dim, 0, n)
    pairs = x.unflatten(dim, (n // 2, 2)).mean(dim=dim + 1)
    return torch.round(pairs).to(eye.dtype)


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
