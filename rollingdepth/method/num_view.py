"""Choosing num_view (the snippet length) from the clip's motion and the free memory.

``snippet_lengths="auto"`` (``--snippet-lengths auto``) calls :func:`choose_num_view`. It
follows the num_view guide; the rules and every threshold live here and are documented, with
the measured scores of example clips, in ``docs/num_view.md``:

1. Motion score (:func:`motion_score`): how far the content moves per frame step, as a
   fraction of the frame diagonal, on up to 16 evenly spaced pairs of consecutive frames at
   256 pixels on the longer edge.
2. Motion picks the wish:
   - score <= ``MOTION_SLOW``: 2. Static or slow: frames that barely differ add little to
     each other, and 2 is the cheapest.
   - score >= ``MOTION_FAST``: 4. Fast motion: more views of a moving scene handle it better.
   - otherwise 3, the value the checkpoint was trained with.
3. Memory lowers the wish one frame at a time (not below 2): 4 needs at least
   ``MIN_FREE_GB_FOR_4`` free, and no snippet may need more than ``MEMORY_FRACTION`` of the
   free accelerator memory (host memory on CPU) in one UNet call.

The choice is deterministic for a given clip and free memory. Its quality effect is the
guide's reasoning, not measured on real data here (see docs/num_view.md).
"""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["MEMORY_FRACTION", "MIN_FREE_GB_FOR_4", "MOTION_FAST", "MOTION_SLOW", "choose_num_view",
           "free_memory_bytes", "motion_score", "snippet_memory_bytes"]

# The thresholds, all in one place (docs/num_view.md shows where example clips fall).
MOTION_SLOW = 0.005  # at or below: static or slow motion -> 2
MOTION_FAST = 0.02  # at or above: fast motion -> 4 (between the two: 3)
MIN_FREE_GB_FOR_4 = 8.0  # the guide's floor for 4 frames per snippet
MEMORY_FRACTION = 0.5  # of the free memory that one snippet's UNet call may take
NUM_VIEW_SLOW, NUM_VIEW_MODERATE, NUM_VIEW_FAST = 2, 3, 4
MIN_NUM_VIEW = 2

FLOW_PAIRS = 16
FLOW_SIZE = 256
# A global shift found by phase correlation counts when its peak is at least this strong
# (camera pans: 0.35 to 1.1 on the example clips; unrelated frames, as at a cut: below 0.06).
PAN_MIN_RESPONSE = 0.2
# Activation memory per latent token and frame through the SD2 UNet with SDPA attention, in
# values (measured order of magnitude; multiplied by the dtype's size).
VALUES_PER_TOKEN = 30_000


def motion_score(frames: np.ndarray, pairs: int = FLOW_PAIRS, size: int = FLOW_SIZE) -> float:
    """How far content moves per frame step over the frame diagonal: the median over pairs (0 for one frame)."""
    n = frames.shape[0]
    if n < 2:
        return 0.0
    starts = np.unique(np.linspace(0, n - 2, num=min(pairs, n - 1)).round().astype(int))
    return float(np.median([pair_motion(frames[i], frames[i + 1], size) for i in starts]))


def pair_motion(a: np.ndarray, b: np.ndarray, size: int = FLOW_SIZE) -> float:
    """Motion between two RGB frames over the diagonal: the larger of the median optical flow
    (OpenCV DIS) and a confident global shift (phase correlation).

    DIS loses track of fine texture moving more than about 8 % of the frame per step; phase
    correlation measures such pans directly.
    """
    import cv2

    h, w = a.shape[:2]
    f = min(1.0, size / max(h, w))
    dsize = (max(8, int(w * f)), max(8, int(h * f)))
    gray_a, gray_b = (cv2.cvtColor(cv2.resize(np.asarray(x), dsize, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
                      for x in (a, b))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    flow = float(np.median(np.linalg.norm(dis.calc(gray_a, gray_b, None), axis=-1)))
    window = cv2.createHanningWindow(dsize, cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(gray_a.astype(np.float32), gray_b.astype(np.float32), window)
    pan = float(np.hypot(dx, dy)) if response >= PAN_MIN_RESPONSE else 0.0
    return max(flow, pan) / float(np.hypot(*dsize))


def free_memory_bytes(device: torch.device) -> int:
    """Free memory of the accelerator, or available host memory on CPU/MPS."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not Linux
        return 8 * 2**30


def snippet_memory_bytes(num_view: int, latent_hw: tuple[int, int], dtype: torch.dtype) -> int:
    """Estimated activation memory of one snippet's UNet call."""
    bytes_per_value = torch.finfo(dtype).bits // 8
    return int(num_view * latent_hw[0] * latent_hw[1] * VALUES_PER_TOKEN * bytes_per_value)


def num_view_for_motion(score: float) -> tuple[int, str]:
    """The guide's num_view for a motion score, and why."""
    if score <= MOTION_SLOW:
        return NUM_VIEW_SLOW, (f"static or slow motion (score {score:.4f} <= {MOTION_SLOW}): "
                               f"frames that barely differ add little to each other; 2 is the cheapest")
    if score >= MOTION_FAST:
        return NUM_VIEW_FAST, (f"fast motion (score {score:.4f} >= {MOTION_FAST}): "
                               f"more views of a moving scene handle motion better")
    return NUM_VIEW_MODERATE, f"moderate motion (score {score:.4f}): 3, the training value"


def memory_limit(num_view: int, free: int, latent_hw: tuple[int, int], dtype: torch.dtype) -> str | None:
    """Why ``num_view`` frames do not fit in ``free`` bytes, or None when they do."""
    free_gb = free / 2**30
    if num_view >= NUM_VIEW_FAST and free_gb < MIN_FREE_GB_FOR_4:
        return f"memory: {num_view} frames need at least {MIN_FREE_GB_FOR_4:g} GB free, {free_gb:.1f} GB free"
    need = snippet_memory_bytes(num_view, latent_hw, dtype)
    if need > MEMORY_FRACTION * free:
        return f"memory: {num_view} frames need ~{need / 2**30:.1f} GB of {free_gb:.1f} GB free"
    return None


def choose_num_view(
    frames: np.ndarray | None,
    device: torch.device,
    latent_hw: tuple[int, int],
    dtype: torch.dtype,
    *,
    free_bytes: int | None = None,
    motion: float | None = None,
    num_frames: int | None = None,
) -> tuple[int, dict]:
    """num_view for this clip and the reasons: ``(n, {"num_view", "reason", "motion_score", ...})``.

    ``frames`` (uint8 ``[N, H, W, 3]``) give the motion score; a streaming caller that scored
    the motion itself passes ``motion`` and ``num_frames`` instead (``frames=None``).
    ``free_bytes`` replaces the measured free memory.
    """
    if frames is None and (motion is None or num_frames is None):
        raise ValueError("frames: needed unless both motion and num_frames are given")
    num_frames = int(frames.shape[0]) if num_frames is None else int(num_frames)
    score = motion_score(frames) if motion is None else float(motion)
    free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
    n, reason = num_view_for_motion(score)
    reasons = [reason]
    while n > MIN_NUM_VIEW and (limit := memory_limit(n, free, latent_hw, dtype)):
        reasons.append(f"{limit}, so {n - 1}")
        n -= 1
    if 0 < num_frames < n:
        n = num_frames
        reasons.append(f"the clip has {num_frames} frames")
    return n, {
        "num_view": n,
        "motion_score": round(score, 6),
        "free_memory_gb": round(free / 2**30, 2),
        "reason": "; ".join(reasons),
        "thresholds": {"motion_slow": MOTION_SLOW, "motion_fast": MOTION_FAST,
                       "min_free_gb_for_4": MIN_FREE_GB_FOR_4, "memory_fraction": MEMORY_FRACTION},
    }
