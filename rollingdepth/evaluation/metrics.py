"""Scoring depth videos against ground truth: alignment, accuracy metrics, temporal consistency.

Protocol (``docs/evaluation.md``): the prediction (affine-invariant inverse depth) is resized
to the ground truth's size, fitted to ``1 / GT`` by least squares with one scale and shift per
video (or per frame, or in depth space), turned into depth, clipped to the depth range and
scored on valid pixels, pooled over the video or averaged over frames. Temporal consistency
is the optical-flow warping error (OPW) and, where camera poses and intrinsics are known, the
temporal alignment error (TAE): each frame's depth reprojected into the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ALIGN_MODES",
    "AVERAGE_MODES",
    "EvalResult",
    "Protocol",
    "align_prediction",
    "depth_metrics",
    "evaluate_video",
    "optical_flow_warping_error",
    "resize_prediction",
    "temporal_alignment_error",
    "valid_mask",
]

ALIGN_MODES = ("video", "frame", "depth")
AVERAGE_MODES = ("pixels", "frames")  # pool all valid pixels of a video, or average per-frame values
# Forward-backward consistency test for occlusions (Sundaram et al. 2010).
FB_ALPHA = 0.01
FB_BETA = 0.5


@dataclass
class EvalResult:
    """Metrics of one video; ``per_frame`` holds arrays over frames (NaN where undefined)."""

    metrics: dict[str, float]
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)
    scale_shift: list = field(default_factory=list)


def resize_prediction(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[N, h, w]`` to ``size`` (H, W)."""
    import cv2

    if pred.shape[1:] == tuple(size):
        return pred.astype(np.float64)
    return np.stack([cv2.resize(f.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                     for f in pred]).astype(np.float64)


def valid_mask(gt: np.ndarray, min_depth: float, max_depth: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels with finite GT inside ``(min_depth, max_depth)`` (and inside ``mask``)."""
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        valid &= mask.astype(bool)
    return valid


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``a, b`` with ``a*x + b ~ y``."""
    if x.size < 2:
        raise ValueError("too few valid pixels to fit a scale and shift")
    a_mat = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(a_mat, y, rcond=None)
    return float(a), float(b)


def align_prediction(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, mode: str, min_depth: float, max_depth: float
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Aligned depth ``[N, H, W]`` and the fitted ``(scale, shift)`` pairs.

    ``video``/``frame``: fit ``a*pred + b`` to ``1/GT`` (disparity) per video or per frame,
    then depth = 1 / disparity. ``depth``: fit ``a*pred + b`` to GT directly.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"align: unknown mode {mode!r}; expected one of {ALIGN_MODES}")
    target = gt if mode == "depth" else np.where(valid, 1.0 / np.where(valid, gt, 1.0), 0.0)
    if mode == "frame":
        params = []
        for f in range(pred.shape[0]):
            if valid[f].sum() < 2:
                params.append((np.nan, np.nan))
                continue
            params.append(_fit(pred[f][valid[f]], target[f][valid[f]]))
    else:
        params = [_fit(pred[valid], target[valid])]
    aligned = np.empty_like(pred, dtype=np.float64)
    for f in range(pred.shape[0]):
        a, b = params[f] if mode == "frame" else params[0]
        aligned[f] = a * pred[f] + b
    if mode != "depth":
        disparity = np.clip(aligned, 1.0 / max_depth, 1.0 / min_depth)
        aligned = 1.0 / disparity
    return np.clip(aligned, min_depth, max_depth), params


def depth_metrics(depth: np.ndarray, gt: np.ndarray, valid: np.ndarray, average: str = "pixels") -> dict[str, float]:
    """AbsRel, RMSE and delta1..3 over the valid pixels of ``[N, H, W]`` arrays.

    ``pixels``: pooled over all valid pixels; ``frames``: per frame, then the mean over the
    frames that have valid pixels (RMSE too is taken per frame).
    """
    if average not in AVERAGE_MODES:
        raise ValueError(f"average: unknown mode {average!r}; expected one of {AVERAGE_MODES}")
    if average == "frames":
        per_frame = [depth_metrics(depth[f], gt[f], valid[f]) for f in range(gt.shape[0]) if valid[f].any()]
        keys = ("abs_rel", "rmse", "delta1", "delta2", "delta3")
        if not per_frame:
            return {k: float("nan") for k in keys}
        return {k: float(np.mean([m[k] for m in per_frame])) for k in keys}
    d, g = depth[valid].astype(np.float64), gt[valid].astype(np.float64)
    if d.size == 0:
        return {k: float("nan") for k in ("abs_rel", "rmse", "delta1", "delta2", "delta3")}
    ratio = np.maximum(d / g, g / d)
    return {
        "abs_rel": float(np.mean(np.abs(d - g) / g)),
        "rmse": float(np.sqrt(np.mean((d - g) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def _flow(a: np.ndarray, b: np.ndarray):
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)  # [H, W, 2], a(x) ~ b(x + flow(x))


def _warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image(x + flow(x))`` (bilinear) and where ``x + flow(x)`` lies inside the image."""
    import cv2

    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx + flow[..., 0], yy + flow[..., 1]
    warped = cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, inside


def optical_flow_warping_error(
    rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """OPW: mean |D_t - warp(D_t+1)| over non-occluded (valid) pixels; per-pair values too.

    ``rgb`` uint8 ``[N, H, W, 3]`` at the depth's size. Flow is OpenCV's DIS on grayscale,
    forward and backward; a pixel counts when the forward-backward check passes
    (``|f + b(x+f)|^2 < 0.01 (|f|^2 + |b(x+f)|^2) + 0.5``), the flow stays inside the image,
    and (when given) GT is valid at both ends.
    """
    import cv2

    n = depth.shape[0]
    if rgb.shape[0] != n or rgb.shape[1:3] != depth.shape[1:]:
        raise ValueError(f"rgb: {rgb.shape[:3]} frames do not match the depth's {depth.shape}")
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
    per_pair = np.full(max(n - 1, 0), np.nan)
    for t in range(n - 1):
        fw = _flow(gray[t], gray[t + 1])
        bw = _flow(gray[t + 1], gray[t])
        bw_at, inside = _warp(bw, fw)
        lhs = np.sum((fw + bw_at) ** 2, axis=-1)
        rhs = FB_ALPHA * (np.sum(fw**2, axis=-1) + np.sum(bw_at**2, axis=-1)) + FB_BETA
        ok = inside & (lhs < rhs)
        warped, _ = _warp(depth[t + 1], fw)
        if valid is not None:
            valid_next, _ = _warp(valid[t + 1].astype(np.float32), fw)
            ok &= valid[t] & (valid_next > 0.999)
        if ok.any():
            per_pair[t] = float(np.mean(np.abs(depth[t] - warped)[ok]))
    value = float(np.nanmean(per_pair)) if np.isfinite(per_pair).any() else float("nan")
    return value, per_pair


def _reproject(depth: np.ndarray, valid: np.ndarray, k_src: np.ndarray, k_dst: np.ndarray,
               src_to_dst: np.ndarray) -> np.ndarray:
    """Depth of frame ``src`` seen from camera ``dst``: ``[H, W]``, inf where nothing lands.

    Each valid pixel is lifted with its depth, moved by ``src_to_dst`` (4x4), projected with
    ``k_dst`` and rounded to the nearest pixel; where several land, the nearest wins.
    """
    h, w = depth.shape
    v, u = np.nonzero(valid & (depth > 0))
    z = depth[v, u]
    x = (u - k_src[0, 2]) / k_src[0, 0] * z
    y = (v - k_src[1, 2]) / k_src[1, 1] * z
    p = src_to_dst[:3, :3] @ np.stack([x, y, z]) + src_to_dst[:3, 3:4]  # [3, M] in the dst camera
    front = p[2] > 1e-9
    p = p[:, front]
    u2 = np.rint(k_dst[0, 0] * p[0] / p[2] + k_dst[0, 2]).astype(np.int64)
    v2 = np.rint(k_dst[1, 1] * p[1] / p[2] + k_dst[1, 2]).astype(np.int64)
    inside = (u2 >= 0) & (u2 < w) & (v2 >= 0) & (v2 < h)
    zbuf = np.full(h * w, np.inf)
    np.minimum.at(zbuf, v2[inside] * w + u2[inside], p[2][inside])
    return zbuf.reshape(h, w)


def temporal_alignment_error(
    depth: np.ndarray, intrinsics: np.ndarray, poses: np.ndarray, valid: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """TAE: AbsRel between each frame's depth reprojected into its neighbour and the neighbour's own.

    ``depth`` ``[N, H, W]`` (aligned, metric up to the GT's scale), ``intrinsics`` ``[N, 3, 3]``,
    ``poses`` camera-to-world ``[N, 4, 4]``. For every pair ``t, t+1`` both directions count:
    ``mean |D_dst - reproj(D_src)| / D_dst`` over pixels where something lands (and, when
    given, GT is valid at both ends). Returns the mean over directions and pairs (a fraction;
    Video-Depth-Anything prints it x100) and the per-pair values (NaN where undefined).
    """
    n = depth.shape[0]
    if intrinsics.shape != (n, 3, 3) or poses.shape != (n, 4, 4):
        raise ValueError(f"cameras: need intrinsics [{n}, 3, 3] and poses [{n}, 4, 4], "
                         f"got {intrinsics.shape} and {poses.shape}")
    ok = np.ones(depth.shape, bool) if valid is None else valid.astype(bool)
    per_pair = np.full(max(n - 1, 0), np.nan)
    for t in range(n - 1):
        if not (np.isfinite(poses[t]).all() and np.isfinite(poses[t + 1]).all()):
            continue  # ScanNet marks frames without a pose with -inf
        errors = []
        for a, b in ((t, t + 1), (t + 1, t)):
            a_to_b = np.linalg.inv(poses[b]) @ poses[a]
            proj = _reproject(depth[a], ok[a], intrinsics[a], intrinsics[b], a_to_b)
            hit = np.isfinite(proj) & ok[b] & (depth[b] > 0)
            if hit.any():
                errors.append(float(np.mean(np.abs(depth[b][hit] - proj[hit]) / depth[b][hit])))
        if errors:
            per_pair[t] = float(np.mean(errors))
    value = float(np.nanmean(per_pair)) if np.isfinite(per_pair).any() else float("nan")
    return value, per_pair


@dataclass
class Protocol:
    """How a video is scored: the alignment (``ALIGN_MODES``), the averaging (``AVERAGE_MODES``)
    and the valid ground truth, ``min_depth < depth < max_depth``."""

    align: str = "video"
    average: str = "pixels"
    min_depth: float = 1e-3
    max_depth: float = 80.0
    name: str = "rollingdepth"  # or "vda": Video-Depth-Anything's benchmark code (rollingdepth.evaluation.protocols)


def evaluate_video(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    cameras: tuple[np.ndarray, np.ndarray] | None = None,
    protocol: Protocol | None = None,
) -> EvalResult:
    """Score one prediction ``[N, h, w]`` against GT depth ``[N, H, W]`` under ``protocol``
    (default: :class:`Protocol`).

    ``rgb`` (uint8 ``[N, H, W, 3]``) adds OPW; ``cameras`` (intrinsics ``[N, 3, 3]``,
    camera-to-world ``[N, 4, 4]``) adds TAE.
    """
    protocol = protocol or Protocol()
    align, average, min_depth, max_depth = protocol.align, protocol.average, protocol.min_depth, protocol.max_depth
    if pred.ndim != 3 or gt.ndim != 3:
        raise ValueError(f"expected [N, H, W] arrays, got prediction {pred.shape} and ground truth {gt.shape}")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"frame counts differ: prediction has {pred.shape[0]}, ground truth {gt.shape[0]}")
    if mask is not None and mask.shape != gt.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the ground truth's {gt.shape}")
    if not 0 < min_depth < max_depth:
        raise ValueError(f"depth range: need 0 < min-depth < max-depth, got {min_depth}, {max_depth}")
    if average not in AVERAGE_MODES:
        raise ValueError(f"average: unknown mode {average!r}; expected one of {AVERAGE_MODES}")
    pred = resize_prediction(pred, gt.shape[1:])
    valid = valid_mask(gt, min_depth, max_depth, mask)
    if valid.sum() < 2:
        raise ValueError("no valid ground-truth pixels in the depth range")
    depth, params = align_prediction(pred, gt, valid, align, min_depth, max_depth)
    metrics = depth_metrics(depth, gt, valid, average)
    per_frame_absrel = np.array([
        np.mean(np.abs(depth[f][valid[f]] - gt[f][valid[f]]) / gt[f][valid[f]]) if valid[f].any() else np.nan
        for f in range(gt.shape[0])
    ])
    per_frame = {"abs_rel": per_frame_absrel}
    if rgb is not None:
        import cv2

        if rgb.shape[0] != gt.shape[0]:
            raise ValueError(f"frame counts differ: RGB has {rgb.shape[0]}, ground truth {gt.shape[0]}")
        if rgb.shape[1:3] != gt.shape[1:]:
            rgb = np.stack([cv2.resize(f, (gt.shape[2], gt.shape[1]), interpolation=cv2.INTER_AREA) for f in rgb])
        metrics["opw"], per_frame["opw"] = optical_flow_warping_error(rgb, depth, valid)
    if cameras is not None:
        metrics["tae"], per_frame["tae"] = temporal_alignment_error(depth, *cameras, valid=valid)
    return EvalResult(metrics=metrics, per_frame=per_frame, scale_shift=params)
