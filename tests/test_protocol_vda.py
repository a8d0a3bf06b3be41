"""Video-Depth-Anything's protocol (rollingdepth.evaluation.protocol_vda) against a plain re-implementation
written here from the same formulas (loops, closed-form fit), and where it parts from ours."""

import math

import numpy as np
import pytest

from rollingdepth.evaluation.metrics import Protocol, evaluate_video, temporal_alignment_error
from rollingdepth.evaluation.protocol_vda import DEPTH_CAP, align_vda, evaluate_video_vda, tae_vda

CAP = DEPTH_CAP["scannet"]  # 10 m


def scene(seed=0, frames=5, h=24, w=32):
    """GT depth in metres with holes (0), far pixels beyond the cap, and a prediction: noisy
    inverse depth, affine-shifted so that some of it lies below 1e-3 (some negative)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    gt = np.stack([2.0 + 0.2 * xx + 0.1 * yy + 0.3 * t for t in range(frames)]).astype(np.float64)
    gt[rng.random(gt.shape) < 0.05] = 0.0  # no measurement
    pred = 0.8 / np.maximum(gt, 0.5) - 0.12 + rng.normal(0, 0.01, gt.shape)
    return gt, pred.astype(np.float32)


# ---------------------------------------------------------------- the formulas, written plainly
def plain_accuracy(pred, gt, cap):
    """Their accuracy protocol pixel by pixel: clip, fit, invert, clip, metrics per frame."""
    n, h, w = gt.shape
    xs, ys = [], []
    for f in range(n):
        for i in range(h):
            for j in range(w):
                if 1e-3 < gt[f, i, j] < cap:
                    xs.append(max(float(pred[f, i, j]), 1e-3))
                    ys.append(1.0 / (float(gt[f, i, j]) + 1e-8))
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    scale = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    shift = my - scale * mx
    rows = []
    for f in range(n):
        rel, sq, good = [], [], [0, 0, 0]
        for i in range(h):
            for j in range(w):
                g = float(gt[f, i, j])
                if not 1e-3 < g < cap:
                    continue
                disparity = max(scale * max(float(pred[f, i, j]), 1e-3) + shift, 1e-3)
                d = min(max(1.0 / disparity, 1e-3), cap)
                rel.append(abs(d - g) / g)
                sq.append((d - g) ** 2)
                for k in range(3):
                    good[k] += max(d / g, g / d) < 1.25 ** (k + 1)
        if rel:
            rows.append([sum(rel) / len(rel), math.sqrt(sum(sq) / len(sq))] + [c / len(rel) for c in good])
    keys = ("abs_rel", "rmse", "delta1", "delta2", "delta3")
    return {k: sum(r[i] for r in rows) / len(rows) for i, k in enumerate(keys)}


def plain_tae(depth, intrinsics, poses):
    """Their TAE pixel by pixel: every pixel moved, last write wins, AbsRel where > 0, x2 (N-1)."""
    n, h, w = depth.shape
    total = 0.0
    for t in range(n - 1):
        fwd = np.linalg.inv(poses[t + 1]) @ poses[t]
        fx, fy, cx, cy = intrinsics[t][0, 0], intrinsics[t][1, 1], intrinsics[t][0, 2], intrinsics[t][1, 2]
        for src, dst, move in ((depth[t], depth[t + 1], fwd), (depth[t + 1], depth[t], np.linalg.inv(fwd))):
            proj = {}
            for i in range(h):
                for j in range(w):
                    z = float(src[i, j])
                    p = move[:3, :3] @ np.array([(j - cx) * z / fx, (i - cy) * z / fy, z]) + move[:3, 3]
                    u, v = round(p[0] * fx / p[2] + cx), round(p[1] * fy / p[2] + cy)
                    if 0 <= u < w and 0 <= v < h:
                        proj[(v, u)] = p[2]  # a later point replaces an earlier one
            errors = [abs(dst[v, u] - z) / dst[v, u] for (v, u), z in proj.items() if z > 0 and dst[v, u] > 0]
            total += sum(errors) / len(errors) if errors else 0.0
    return total / (2 * (n - 1))


def cameras(frames, h=24, w=32):
    """A camera that turns a little and moves forward: points collide in the next frame."""
    k = np.array([[30.0, 0, w / 2 - 0.5], [0, 30.0, h / 2 - 0.5], [0, 0, 1]])
    poses = []
    for t in range(frames):
        a = 0.03 * t
        pose = np.eye(4)
        pose[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        pose[:3, 3] = [0.05 * t, 0.0, 0.4 * t]
        poses.append(pose)
    return np.stack([k] * frames), np.stack(poses)


# ---------------------------------------------------------------------------------- the tests
def test_accuracy_equals_plain_formulas():
    gt, pred = scene()
    assert (pred < 1e-3).mean() > 0.1 and (gt >= CAP).any()  # the clip and the cap both matter here
    got = evaluate_video_vda(pred, gt, dataset="scannet").metrics
    want = plain_accuracy(pred, gt, CAP)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_tae_equals_plain_formulas():
    gt, pred = scene(frames=4, h=12, w=16)
    depth, _, _ = align_vda(pred, gt, CAP)
    k, poses = cameras(4, 12, 16)
    got = tae_vda(depth, k, poses)
    assert got == pytest.approx(plain_tae(depth, k, poses), abs=1e-6)
    assert got > 0.01


def test_protocols_differ_on_values_below_the_clip():
    """Our protocol does not clip the raw prediction (right for RollingDepth's output in
    [-1, 1]); theirs does, so a prediction with values below 1e-3 scores differently."""
    gt, pred = scene()
    ours = evaluate_video(pred, gt, protocol=Protocol(align="video", average="frames", max_depth=CAP)).metrics
    theirs = evaluate_video_vda(pred, gt, dataset="scannet").metrics
    assert abs(ours["abs_rel"] - theirs["abs_rel"]) > 0.02  # 0.061 here, 0.094 theirs
    assert ours["abs_rel"] < theirs["abs_rel"]  # the clip throws away what the fit could use


def test_protocols_agree_when_nothing_is_clipped():
    """With every predicted value at least 1e-3, the only difference left is their 1e-8 in
    ``1 / (GT + 1e-8)``: ``--average frames --max-depth 10`` gives the same numbers."""
    gt, pred = scene()
    pred = pred - pred.min() + 1e-3
    ours = evaluate_video(pred, gt, protocol=Protocol(align="video", average="frames", max_depth=CAP)).metrics
    theirs = evaluate_video_vda(pred, gt, dataset="scannet").metrics
    for key in ("abs_rel", "rmse", "delta1", "delta2", "delta3"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


def test_tae_differs_from_ours():
    """Ours: the nearest point wins on collisions, only pixels with valid GT, pairs without
    pixels left out; theirs: the last point written, every pixel."""
    gt, pred = scene(frames=4, h=12, w=16)
    depth, valid, _ = align_vda(pred, gt, CAP)
    k, poses = cameras(4, 12, 16)
    ours, _ = temporal_alignment_error(depth, k, poses, valid=valid)
    assert abs(ours - tae_vda(depth, k, poses)) > 1e-3


def test_inputs_checked():
    gt, pred = scene()
    with pytest.raises(ValueError, match="dataset"):
        evaluate_video_vda(pred, gt, dataset="pointodyssey")
    with pytest.raises(ValueError, match="gt"):
        evaluate_video_vda(pred, np.zeros_like(gt), max_depth=10.0)
    with pytest.raises(ValueError, match="cameras"):
        tae_vda(gt, np.eye(3)[None], np.eye(4)[None])


def test_eval_depth_protocol_vda_scores_as_their_protocol(tmp_path, capsys):
    """``eval-depth --protocol vda`` scores a file pair with their protocol (the same numbers as
    :func:`evaluate_video_vda`), and differs from ours where their clipping bites."""
    import json

    from .test_eval_depth import _eval

    rng = np.random.default_rng(3)
    gt = rng.uniform(1.0, 9.0, (4, 12, 16))
    pred = (1.0 / gt - 0.3 + 0.02 * rng.standard_normal(gt.shape)).astype(np.float32)  # some values below 1e-3
    assert (pred < 1e-3).any()
    np.save(tmp_path / "clip_pred.npy", pred)
    np.save(tmp_path / "clip.npy", gt)
    scores = {}
    for protocol in ("rollingdepth", "vda"):
        code, _, err = _eval(["--pred", tmp_path / "clip_pred.npy", "--gt", tmp_path / "clip.npy", "--max-depth", 10,
                              "--average", "frames", "--protocol", protocol, "-o", tmp_path / protocol], capsys)
        assert code == 0, err
        report = json.loads((tmp_path / protocol / "metrics.json").read_text())
        assert report["settings"]["protocol"] == protocol
        scores[protocol] = report["videos"]["clip"]
    theirs = evaluate_video_vda(pred, gt, max_depth=10.0).metrics
    for key in ("abs_rel", "delta1", "rmse"):
        assert abs(scores["vda"][key] - theirs[key]) < 1e-6, key
    assert abs(scores["vda"]["abs_rel"] - scores["rollingdepth"]["abs_rel"]) > 1e-3
    code, _, err = _eval(["--pred", tmp_path / "clip_pred.npy", "--gt", tmp_path / "clip.npy", "--protocol", "peers"],
                         capsys)
    assert code == 2 and "--protocol" in err and "Traceback" not in err
