"""Small synthetic clips for shot detection (tests/test_shots.py, benchmarks/bench_shots.py).

Scenes come from scripts/make_synthetic_scene.py's ``render`` (one camera path), made
different by the part of the path shown and by colour: channel order and inversion.
Each clip is ``(frames uint8 [N, H, W, 3], true cuts)``.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

H, W = 36, 64  # small frames keep the tests cheap


@lru_cache(maxsize=1)
def _render():
    path = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_scene.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_scene", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.render


@lru_cache(maxsize=8)
def _path(num_frames: int, width: int = W) -> np.ndarray:
    return _render()(num_frames, H, width)[0]  # [num_frames, H, width, 3]


def scene(kind: str, count: int, start: int = 0, speed: int = 1) -> np.ndarray:
    """``count`` frames of scene ``kind`` ("a", "b" or "c"), from frame ``start`` of a 48-frame
    camera path walked ``speed`` frames per frame."""
    frames = _path(48 * speed)[start * speed:(start + count) * speed:speed]
    if kind == "a":
        return frames
    if kind == "b":
        return frames[..., [2, 0, 1]]  # other hues
    if kind == "c":
        return 255 - frames[..., [1, 2, 0]]  # inverted colours: dark, other hues
    raise ValueError(f"kind must be a, b or c, got {kind!r}")


def three_scenes(counts=(14, 10, 12)) -> tuple[np.ndarray, list[int]]:
    """Scenes a, b, c joined by hard cuts."""
    parts = [scene("a", counts[0]), scene("b", counts[1], start=20), scene("c", counts[2], start=8)]
    cuts = list(np.cumsum(counts[:-1]))
    return np.concatenate(parts), [int(c) for c in cuts]


def pan(count: int = 30, step: int = 5, still: int = 0) -> tuple[np.ndarray, list[int]]:
    """A camera pan: a window sliding ``step`` pixels a frame over one wide render, after
    ``still`` frames without moving."""
    wide = _path(1, W + step * count)[0]  # [H, W + step * count, 3]
    offsets = [max(0, i - still) * step for i in range(count)]
    return np.stack([wide[:, o:o + W] for o in offsets]), []


def fast_motion(count: int = 24) -> tuple[np.ndarray, list[int]]:
    """The camera path walked 2 frames a frame (scene b, then back through it: a whip)."""
    forward = scene("b", count // 2, speed=2)
    return np.concatenate([forward, forward[::-1]]), []


def dissolve(length: int = 10, before: int = 12, after: int = 12, into: str = "b") -> tuple[np.ndarray, list[int]]:
    """Scene a dissolving into scene ``into`` over ``length`` frames (both moving)."""
    a = scene("a", before + length).astype(np.float32)
    b = scene(into, length + after, start=10).astype(np.float32)
    w = np.linspace(0, 1, length + 2)[1:-1, None, None, None]  # [length, 1, 1, 1]
    mixed = (1 - w) * a[before:] + w * b[:length]
    return np.concatenate([a[:before], mixed, b[length:]]).round().astype(np.uint8), []


def fade(length: int = 8, before: int = 10, after: int = 10, floor: float = 0.0) -> tuple[np.ndarray, list[int]]:
    """Scene a fading to black (``floor`` times its brightness) over ``length`` frames, then
    scene c fading in from there."""
    a = scene("a", before + length).astype(np.float32)
    c = scene("c", length + after, start=5).astype(np.float32)
    down = np.linspace(1, floor, length + 1)[1:, None, None, None]  # [length, 1, 1, 1], ends at floor
    parts = [a[:before], a[before:] * down, c[:length] * down[::-1], c[length:]]
    return np.concatenate(parts).round().astype(np.uint8), []


def flash(at: int = 12, count: int = 24, length: int = 2) -> tuple[np.ndarray, list[int]]:
    """Scene a with ``length`` bright frames (a photographer's flash, lightning, a strobe) at ``at``."""
    frames = scene("a", count).copy()
    frames[at:at + length] = np.clip(frames[at:at + length].astype(np.int32) + 160, 0, 255).astype(np.uint8)
    return frames, []


def held(clip: tuple[np.ndarray, list[int]], hold: int) -> tuple[np.ndarray, list[int]]:
    """Animation on twos or threes: every ``hold``-th picture of ``clip``, each shown ``hold``
    times (the clip's cuts, if any, moved to where their picture starts)."""
    frames, cuts = clip
    pictures = frames[::hold]
    return np.repeat(pictures, hold, axis=0)[:len(frames)], [-(-c // hold) * hold for c in cuts]


def dark(clip: tuple[np.ndarray, list[int]], mean: float) -> tuple[np.ndarray, list[int]]:
    """``clip`` darkened to a mean brightness of about ``mean`` (0..255): a night or low-key scene."""
    frames, cuts = clip
    scale = mean / float(frames.mean())
    return (frames.astype(np.float32) * scale).round().clip(0, 255).astype(np.uint8), cuts


def letterbox(clip: tuple[np.ndarray, list[int]], bar: float = 0.25) -> tuple[np.ndarray, list[int]]:
    """``clip`` inside black bars above and below, each ``bar`` of the new height."""
    frames, cuts = clip
    pad = round(frames.shape[1] * bar / (1 - 2 * bar))
    return np.pad(frames, ((0, 0), (pad, pad), (0, 0), (0, 0))), cuts


CLIPS = {
    "three scenes": three_scenes,
    "short shots 10,3,1,8": lambda: _short(),
    "pan": pan,
    "still, then a fast pan": lambda: pan(30, step=10, still=10),
    "fast motion": fast_motion,
    "dissolve": dissolve,
    "quick dissolve": lambda: dissolve(3, into="c"),
    "fade": fade,
    "quick fade": lambda: fade(3),
    "fade to near black": lambda: fade(4, floor=0.1),
    "flash": flash,
    "jump cut, same set": lambda: _jump(),
}

# Held pictures, long flashes, the dark and letterboxes (#43).
HARD_CLIPS = {
    **{f"pan {step} px on {name}": (lambda step=step, hold=hold: held(pan(40, step=step), hold))
       for step in (2, 4, 8) for hold, name in ((2, "twos"), (3, "threes"))},
    "three scenes on twos": lambda: held(three_scenes((14, 10, 12)), 2),
    **{f"flash of {n} frames": (lambda n=n: flash(at=10, count=28, length=n)) for n in (2, 3, 4, 5, 6)},
    **{f"three scenes at brightness {m}": (lambda m=m: dark(three_scenes(), m)) for m in (20, 27, 33, 40)},
    "three scenes, letterboxed": lambda: letterbox(three_scenes()),
    "three scenes at brightness 30, letterboxed": lambda: letterbox(dark(three_scenes(), 30)),
    "pan 4 px on twos, letterboxed": lambda: letterbox(held(pan(40, step=4), 2)),
}


def _jump() -> tuple[np.ndarray, list[int]]:
    """A cut between two views of the same set (the camera jumps along its path): same colours."""
    return np.concatenate([scene("a", 14), scene("a", 14, start=34)]), [14]


def _short() -> tuple[np.ndarray, list[int]]:
    parts = [scene("a", 10), scene("b", 3, start=20), scene("c", 1, start=8), scene("a", 8, start=30)]
    return np.concatenate(parts), [10, 13, 14]
