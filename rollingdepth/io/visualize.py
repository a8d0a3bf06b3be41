"""Turning depth into pictures: colour maps, side-by-side frames, 16-bit PNG values."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["SBS_GAP", "check_cmap", "colorize", "side_by_side", "to_uint16"]

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


def to_uint16(depth: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Values ``vmin..vmax`` to 0..65535 (``value = vmin + png / 65535 * (vmax - vmin)``)."""
    span = vmax - vmin if vmax > vmin else 1.0
    return np.clip((depth - vmin) / span * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
