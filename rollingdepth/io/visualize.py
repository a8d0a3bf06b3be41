"""Turning depth into pictures: colour maps, side-by-side frames."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["SBS_GAP", "check_cmap", "colorize", "side_by_side"]

SBS_GAP = 16  # white pixels between the input and the depth in the side-by-side video


@lru_cache(maxsize=None)
def _lut(name: str) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)  # [256, 3]


def check_cmap(name: str) -> str:
    """Return ``name`` if matplotlib knows it, else raise ``ValueError`` naming it."""
    import matplotlib

    if name not in matplotlib.colormaps:
        raise ValueError(f"cmap: unknown colour map {name!r} (use a matplotlib name such as Spectral_r, Greys_r, inferno)")
    return name


def colorize(depth: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """Map ``[..., H, W]`` values in ``vmin..vmax`` through ``cmap`` to uint8 RGB ``[..., H, W, 3]``."""
    span = vmax - vmin if vmax > vmin else 1.0
    index = np.clip((depth - vmin) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.take(_lut(cmap), index, axis=0)  # 4x faster than _lut(cmap)[index]


def side_by_side(rgb: np.ndarray, depth_rgb: np.ndarray, gap: int = SBS_GAP) -> np.ndarray:
    """Input and coloured depth ``[H, W, 3]`` next to each other with a white gap."""
    h = rgb.shape[0]
    spacer = np.full((h, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([rgb, spacer, depth_rgb], axis=1)

