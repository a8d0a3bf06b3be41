"""Video-Depth-Anything's benchmark protocol (``eval-depth --protocol vda``), from its formulas.

So that our numbers can stand beside the tables of Video-Depth-Anything and DepthCrafter,
this scores a prediction the way their benchmark code does (``docs/evaluation.md`` lists
each difference from our default protocol, :mod:`rollingdepth.evaluation.metrics`):

- accuracy: valid GT in ``(1e-3, cap)`` with the dataset's cap (:data:`DEPTH_CAP`); the raw
  prediction clipped below at 1e-3, then one least-squares scale and shift per video against
  ``1 / (GT + 1e-8)``; the aligned disparity clipped below at 1e-3, inverted, the depth
  clipped to ``[1e-3, cap]``; each metric per frame, averaged over the frames with valid GT;
- TAE: the same alignment; every pixel of one frame (no GT mask) lifted with its depth and
  the first frame's intrinsics, moved by the relative pose and rounded to a pixel of the
  other; where several land on one pixel the last one written (in row-major order) stays;
  AbsRel against the other frame's depth where the projected depth is positive; both
  directions, a pair without such pixels counts as 0; the mean over ``2 (N - 1)`` values.
"""

from __future__ import annotations

import numpy as np

from rollingdepth.evaluation.metrics import EvalResult, depth_metrics, optical_flow_warping_error, resize_prediction

__all__ = ["DEPTH_CAP", "EVAL_FRAMES", "MIN_DEPTH", "PRED_CLIP", "TAE_FRAMES", "TAE_SCENES", "align_vda",
           "evaluate_video_vda", "tae_vda"]

MIN_DEPTH = 1e-3  # GT must exceed this; also the floor of the aligned depth
PRED_CLIP = 1e-3  # the raw prediction and the aligned disparity are clipped below at this
GT_EPS = 1e-8  # added to GT before taking its inverse for the fit
# Upper end of the valid GT range per dataset, metres.
DEPTH_CAP = {"scannet": 10.0, "bonn": 10.0, "nyuv2": 10.0, "sintel": 70.0, "kitti": 80.0}
# Frames scored per sequence (the first ones) in their accuracy tables; "_500" variants: 500.
EVAL_FRAMES = {"scannet": 90, "bonn": 110, "nyuv2": 500, "sintel": 100, "kitti": 110}
# Their published TAE: the first 20 ScanNet scenes, frames 10 to 179.
TAE_SCENES, TAE_FRAMES = 20, (10, 180)


def align_vda(pred: np.ndarray, gt: np.ndarray, max_depth: float, mask: np.ndarray | None = None):
    """Aligned depth ``[N, H, W]`` (float64), the valid pixels ``[N, H, W]`` and ``(scale, shift)``.

    ``pred`` ``[N, H, W]`` at the GT's size. ``mask`` (not in their code, which has none for
    accuracy) further restricts the valid pixels.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred: shape {pred.shape} differs from the ground truth's {gt.shape}")
    valid = np.isfinite(gt) & (gt > MIN_DEPTH) & (gt < max_depth)
    if mask is not None:
        valid &= mask.astype(bool)
    if valid.sum() < 2:
        raise ValueError("gt: fewer than 2 valid pixels in the depth range")
    clipped = np.maximum(pred.astype(np.float64), PRED_CLIP)  # [N, H, W]
    x = clipped[valid]
    design = np.stack([x, np.ones_like(x)], axis=1)  # [M, 2]
    (scale, shift), *_ = np.linalg.lstsq(design, 1.0 / (gt[valid].astype(np.float64) + GT_EPS), rcond=None)
    disparity = np.maximum(scale * clipped + shift, PRED_CLIP)
    depth = np.clip(1.0 / disparity, MIN_DEPTH, max_depth)
    return depth, valid, (float(scale), float(shift))


def _project_last_wins(src: np.ndarray, rotation: np.ndarray, translation: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Depth ``src [H, W]`` seen from another camera: ``[H, W]``, 0 where nothing lands. Every
    pixel moves (points behind the camera too); on collisions the last in row-major order stays."""
    h, w = src.shape
    v, u = np.mgrid[0:h, 0:w].reshape(2, -1).astype(np.float64)
    z = src.reshape(-1).astype(np.float64)
    points = np.stack([(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z])  # [3, H*W]
    moved = rotation @ points + translation[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        u2 = np.rint(moved[0] * k[0, 0] / moved[2] + k[0, 2])
        v2 = np.rint(moved[1] * k[1, 1] / moved[2] + k[1, 2])
    inside = (u2 >= 0) & (u2 < w) & (v2 >= 0) & (v2 < h)
    out = np.zeros(h * w)
    out[v2[inside].astype(np.int64) * w + u2[inside].astype(np.int64)] = moved[2][inside]  # last write wins
    return out.reshape(h, w)


def _tae_direction(src, dst, src_to_dst, k, dst_mask) -> float:
    """AbsRel of ``dst`` against ``src`` moved into its camera; 0 where no pixel counts."""
    proj = _project_last_wins(src, src_to_dst[:3, :3], src_to_dst[:3, 3], k)
    hit = (proj > 0) & (dst > 0) & dst_mask
    if not hit.any():
        return 0.0
    return float(np.mean(np.abs(dst[hit] - proj[hit]) / dst[hit]))


def tae_vda(depth: np.ndarray, intrinsics: np.ndarray, poses: np.ndarray, mask: np.ndarray | None = None) -> float:
    """TAE of aligned depth ``[N, H, W]`` (a fraction: their tables print it x100).

    ``intrinsics`` ``[N, 3, 3]`` (frame t's serves both directions of the pair t, t+1),
    ``poses`` camera-to-world ``[N, 4, 4]``, ``mask`` ``[N, H, W]`` (optional, on the target frame).
    """
    n = depth.shape[0]
    if n < 2:
        raise ValueError("depth: TAE needs at least 2 frames")
    if intrinsics.shape != (n, 3, 3) or poses.shape != (n, 4, 4):
        raise ValueError(f"cameras: need intrinsics [{n}, 3, 3] and poses [{n}, 4, 4], "
                         f"got {intrinsics.shape} and {poses.shape}")
    keep = np.ones(depth.shape, bool) if mask is None else mask.astype(bool)
    total = 0.0
    for t in range(n - 1):
        forward = np.linalg.inv(poses[t + 1]) @ poses[t]  # camera t -> camera t+1
        total += _tae_direction(depth[t], depth[t + 1], forward, intrinsics[t], keep[t + 1])
        total += _tae_direction(depth[t + 1], depth[t], np.linalg.inv(forward), intrinsics[t], keep[t])
    return total / (2 * (n - 1))


def evaluate_video_vda(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    dataset: str | None = None,
    max_depth: float | None = None,
    mask: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    cameras: tuple[np.ndarray, np.ndarray] | None = None,
) -> EvalResult:
    """Score one prediction ``[N, h, w]`` against GT ``[N, H, W]`` with their protocol.

    The cap is ``max_depth`` or the ``dataset``'s (:data:`DEPTH_CAP`). ``cameras``
    (intrinsics, camera-to-world poses) adds ``tae``; ``rgb`` (uint8 ``[N, H, W, 3]`` at the
    GT's size) adds our ``opw`` on the same aligned depth (their protocol has no OPW). Frames are not cut here (:data:`EVAL_FRAMES`).
    """
    if max_depth is None:
        if dataset not in DEPTH_CAP:
            raise ValueError(f"dataset: {dataset!r} has no cap in their protocol; pass max_depth "
                             f"(known: {', '.join(DEPTH_CAP)})")
        max_depth = DEPTH_CAP[dataset]
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[0] != gt.shape[0]:
        raise ValueError(f"expected [N, H, W] arrays with one N, got prediction {pred.shape} and ground truth {gt.shape}")
    depth, valid, params = align_vda(resize_prediction(pred, gt.shape[1:]), gt, max_depth, mask)
    metrics = depth_metrics(depth, gt, valid, average="frames")
    per_frame = {"abs_rel": np.array([depth_metrics(depth[f], gt[f], valid[f])["abs_rel"] for f in range(len(gt))])}
    if rgb is not None:
        if rgb.shape[:3] != gt.shape:
            raise ValueError(f"rgb: {rgb.shape[:3]} frames do not match the ground truth's {gt.shape}")
        metrics["opw"], per_frame["opw"] = optical_flow_warping_error(rgb, depth, valid)
    if cameras is not None:
        metrics["tae"] = tae_vda(depth, *cameras)
    return EvalResult(metrics=metrics, per_frame=per_frame, scale_shift=[params])
