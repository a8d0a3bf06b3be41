"""Choosing num_view (the snippet length) from the clip's motion and the free memory.

``snippet_lengths="auto"`` (``--snippet-lengths auto``) calls :func:`choose_num_view`. The
rules and every threshold live here and are documented in ``docs/num_view.md``:

1. Start from 3, the value the checkpoint was trained with.
2. Motion score: the median optical-flow magnitude between consecutive frames, divided by the
   frame diagonal (a fraction of the frame per frame step), on up to 16 evenly spaced pairs
   at 256 pixels on the longer edge (OpenCV DIS flow).
   - score >= ``MOTION_FAST``: 2 (far-apart content shares little; shorter snippets);
   - score <= ``MOTION_STATIC``: 4 (nearly static: more views of the same scene), if memory allows.
3. Memory: while one UNet call of a snippet would need more than ``MEMORY_FRACTION`` of the
   free accelerator memory (host memory on CPU), use one frame less (not below 2).

The choice is deterministic for a given clip and free memory. The quality effect of 2 and 4
is not measured on real data here (see docs/num_view.md).
"""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["MOTION_FAST", "MOTION_STATIC", "MEMORY_FRACTION", "choose_num_view", "free_memory_bytes",
           "motion_score", "snippet_memory_bytes"]

DEFAULT_NUM_VIEW = 3
MOTION_FAST = 0.02  # median flow per frame step, as a fraction of the frame diagonal
MOTION_STATIC = 0.002
MEMORY_FRACTION = 0.5  # of the free memory that one snippet's UNet call may take
FLOW_PAIRS = 16
FLOW_SIZE = 256
# Activation memory per latent token and frame through the SD2 UNet with SDPA attention, in
# values (measured order of magnitude; multiplied by the dtype's size).
VALUES_PER_TOKEN = 30_000


def motion_score(frames: np.ndarray, pairs: int = FLOW_PAIRS, size: int = FLOW_SIZE) -> float:
    """Median optical-flow magnitude per frame step over the frame diagonal (0 for one frame)."""
    import cv2

    n = frames.shape[0]
    if n < 2:
        return 0.0
    starts = np.unique(np.linspace(0, n - 2, num=min(pairs, n - 1)).round().astype(int))
    h, w = frames.shape[1:3]
    f = min(1.0, size / max(h, w))
    dsize = (max(8, int(w * f)), max(8, int(h * f)))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    medians = []
    for i in starts:
        a = cv2.cvtColor(cv2.resize(np.asarray(frames[i]), dsize, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        b = cv2.cvtColor(cv2.resize(np.asarray(frames[i + 1]), dsize, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        flow = dis.calc(a, b, None)
        medians.append(float(np.median(np.linalg.norm(flow, axis=-1))))
    return float(np.median(medians)) / float(np.hypot(*dsize))


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
    """num_view for this clip and the reasons: ``(n, {"motion_score", "free_memory_gb", ...})``.

    ``frames`` (uint8 ``[N, H, W, 3]``) give the motion score; a streaming caller that scored
    the motion itself passes ``motion`` and ``num_frames`` instead (``frames=None``).
    """
    if frames is None and (motion is None or num_frames is None):
        raise ValueError("frames: needed unless both motion and num_frames are given")
    num_frames = int(frames.shape[0]) if num_frames is None else int(num_frames)
    score = motion_score(frames) if motion is None else float(motion)
    free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
    reasons = []
    if score >= MOTION_FAST:
        n = 2
        reasons.append(f"fast motion (score {score:.4f} >= {MOTION_FAST})")
    elif score <= MOTION_STATIC:
        n = 4
        reasons.append(f"nearly static (score {score:.4f} <= {MOTION_STATIC})")
    else:
        n = DEFAULT_NUM_VIEW
        reasons.append(f"moderate motion (score {score:.4f}): the training value")
    budget = MEMORY_FRACTION * free
    while n > 2 and snippet_memory_bytes(n, latent_hw, dtype) > budget:
        n -= 1
        reasons.append(f"memory: {n + 1} frames need ~{snippet_memory_bytes(n + 1, latent_hw, dtype) / 2**30:.1f} GB "
                       f"of {free / 2**30:.1f} GB free")
    n = min(n, num_frames) if num_frames > 0 else n
    return n, {
        "num_view": n,
        "motion_score": round(score, 6),
        "free_memory_gb": round(free / 2**30, 2),
        "reason": "; ".join(reasons),
        "thresholds": {"motion_fast": MOTION_FAST, "motion_static": MOTION_STATIC, "memory_fraction": MEMORY_FRACTION},
    }
