"""The metrics and protocols of rollingdepth/evaluation/metrics.py on scenes of exact depth: AbsRel, RMSE,
delta, OPW, TAE, alignment and averaging."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rollingdepth.evaluation.metrics import Protocol, depth_metrics, evaluate_video, optical_flow_warping_error

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from make_synthetic_scene import render  # noqa: E402


@pytest.fixture(scope="module")
def scene():
    rgb, depth = render(num_frames=8, height=48, width=80)
    return rgb, depth


def test_synthetic_scene_has_exact_depth(scene):
    rgb, depth = scene
    assert rgb.shape == (8, 48, 80, 3) and rgb.dtype == np.uint8
    assert depth.shape == (8, 48, 80) and np.isfinite(depth).all()
    assert 1.0 < depth.min() < depth.max() < 40.0
    again_rgb, again_depth = render(num_frames=8, height=48, width=80)
    np.testing.assert_array_equal(again_rgb, rgb)  # deterministic


@pytest.mark.parametrize("scale,shift", [(1.0, 0.0), (3.5, -0.2), (0.01, 7.0)])
def test_perfect_prediction_scores_perfectly(scene, scale, shift):
    _, gt = scene
    pred = scale / gt.astype(np.float64) + shift  # float64: float32 would round 7 + 0.001 itself
    m = evaluate_video(pred, gt, protocol=Protocol(max_depth=100)).metrics
    assert m["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert m["rmse"] == pytest.approx(0, abs=1e-5)
    assert m["delta1"] == pytest.approx(1, abs=1e-6)


def test_known_error_gives_hand_computed_absrel():
    gt = np.full((2, 4, 4), 2.0)
    pred = gt.copy()
    pred[0] *= 1.1  # 10 % too far
    pred[1] *= 1.3  # 30 % too far
    valid = np.ones_like(gt, bool)
    m = depth_metrics(pred, gt, valid)
    assert m["abs_rel"] == pytest.approx(0.2)
    assert m["rmse"] == pytest.approx(np.sqrt((0.2**2 + 0.6**2) / 2))
    assert m["delta1"] == pytest.approx(0.5)  # 1.3 > 1.25
    assert m["delta2"] == pytest.approx(1.0)


def test_invalid_pixels_are_ignored(scene):
    _, gt = scene
    pred = 1.0 / gt
    gt_holes = gt.copy()
    gt_holes[:, :10, :10] = 0.0  # invalid: no depth
    gt_holes[:, -5:, -5:] = np.nan
    pred_noisy = pred.copy()
    pred_noisy[:, :10, :10] = 1e3  # garbage where GT is invalid
    pred_noisy[:, -5:, -5:] = -50
    mask = np.ones_like(gt, bool)
    mask[:, 20:30, 40:50] = False
    pred_noisy[:, 20:30, 40:50] = 99.0  # garbage outside the mask
    m = evaluate_video(pred_noisy.astype(np.float32), gt_holes, mask=mask).metrics
    assert m["abs_rel"] == pytest.approx(0, abs=1e-6)


def test_depth_instead_of_disparity_scores_badly(scene):
    _, gt = scene
    good = evaluate_video((1.0 / gt).astype(np.float32), gt).metrics
    flipped = evaluate_video(gt.astype(np.float32), gt).metrics
    assert good["abs_rel"] < 1e-6 and flipped["abs_rel"] > 0.1 and flipped["delta1"] < 0.99


def test_per_frame_and_depth_space_alignment(scene):
    _, gt = scene
    pred = np.stack([(1 + i) / gt[i] + 0.1 * i for i in range(len(gt))]).astype(np.float32)  # per-frame affine
    assert evaluate_video(pred, gt, protocol=Protocol(align="frame")).metrics["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert evaluate_video(pred, gt, protocol=Protocol(align="video")).metrics["abs_rel"] > 1e-3
    assert evaluate_video((2 * gt + 1).astype(np.float32), gt, protocol=Protocol(align="depth")).metrics["abs_rel"] == pytest.approx(0, abs=1e-6)


def test_prediction_is_resized_to_gt(scene):
    _, gt = scene
    small = np.stack([cv2.resize((1 / g).astype(np.float32), (40, 24), interpolation=cv2.INTER_AREA) for g in gt])
    m = evaluate_video(small, gt).metrics
    assert m["delta1"] > 0.9


def test_opw_zero_for_static_constant_and_grows_with_flicker():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (5, 5), 1.5)
    rgb = np.repeat(texture[None], 6, axis=0)  # static scene
    depth = np.repeat(np.linspace(1, 3, 64)[None, None].repeat(48, 1), 6, axis=0)  # same prediction each frame
    value, per_pair = optical_flow_warping_error(rgb, depth)
    assert value == pytest.approx(0, abs=1e-6) and per_pair.shape == (5,)
    errors = []
    for amplitude in (0.05, 0.2, 0.5):
        flicker = depth + amplitude * rng.standard_normal((6, 1, 1))
        errors.append(optical_flow_warping_error(rgb, flicker)[0])
    assert 0 < errors[0] < errors[1] < errors[2]


def test_mismatches_give_clear_errors(scene):
    _, gt = scene
    with pytest.raises(ValueError, match="frame counts differ"):
        evaluate_video(np.ones((3, 48, 80), np.float32), gt)
    with pytest.raises(ValueError, match="mask shape"):
        evaluate_video((1 / gt).astype(np.float32), gt, mask=np.ones((8, 10, 10), bool))
    with pytest.raises(ValueError, match="frame counts differ"):
        evaluate_video((1 / gt).astype(np.float32), gt, rgb=np.zeros((2, 48, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="align"):
        evaluate_video((1 / gt).astype(np.float32), gt, protocol=Protocol(align="median"))


# ----------------------------------------------------------------------------- TAE and averaging
def _sliding_scene(frames: int = 4, h: int = 48, w: int = 96, f: float = 100.0, step: float = 0.2):
    """A wall at 10 m and a card at 2 m, camera sliding sideways: every pixel moves a whole number of pixels.

    Returns depth [N, H, W], intrinsics [N, 3, 3] and camera-to-world poses [N, 4, 4].
    """
    cx, cy = 64.0, 24.0
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    depth, poses = [], []
    for t in range(frames):
        cam_x = step * t
        x_card, y_card = (xx - cx) * 2.0 / f + cam_x, (yy - cy) * 2.0 / f
        on_card = (x_card > -0.21) & (x_card < 0.19) & (np.abs(y_card) < 0.15)
        assert on_card[:, 0].sum() == on_card[:, -1].sum() == 0  # the card never leaves the image
        depth.append(np.where(on_card, 2.0, 10.0))
        pose = np.eye(4)
        pose[0, 3] = cam_x
        poses.append(pose)
    return np.stack(depth), np.repeat(k[None], frames, axis=0), np.stack(poses)


def test_tae_zero_for_exact_depth_and_poses_and_grows_with_inconsistency():
    from rollingdepth.evaluation.metrics import temporal_alignment_error

    depth, k, poses = _sliding_scene()
    value, per_pair = temporal_alignment_error(depth, k, poses)
    assert value == pytest.approx(0, abs=1e-12) and per_pair.shape == (3,)
    flipped = poses.copy()
    flipped[:, 0, 3] *= -1  # the camera moving the other way: the wrong pose convention
    assert temporal_alignment_error(depth, k, flipped)[0] > 0.05
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((len(depth), 1, 1))
    errors = [temporal_alignment_error(depth * (1 + a * noise), k, poses)[0] for a in (0.02, 0.05, 0.2)]
    assert 0 < errors[0] < errors[1] < errors[2]
    # through evaluate_video: a perfect disparity prediction, then a flickering one
    m = evaluate_video(1.0 / depth, depth, cameras=(k, poses), protocol=Protocol(max_depth=20)).metrics
    assert m["tae"] == pytest.approx(0, abs=1e-9) and m["abs_rel"] == pytest.approx(0, abs=1e-9)
    flicker = evaluate_video((1.0 / depth) * (1 + 0.1 * noise), depth, cameras=(k, poses), protocol=Protocol(max_depth=20)).metrics
    assert flicker["tae"] > 0.01
    with pytest.raises(ValueError, match="cameras"):
        temporal_alignment_error(depth, k[:2], poses)


def test_frame_average_is_the_mean_of_per_frame_metrics():
    gt = np.full((2, 2, 5), 2.0)
    depth = gt.copy()
    depth[0, 0, 0] = 2.2  # frame 0: one pixel 10 % off, of 10 valid
    depth[1, 0] *= 1.5  # frame 1: 50 % off where valid (2 pixels), exact where not
    valid = np.ones_like(gt, bool)
    valid[1] = False
    valid[1, 0, :2] = True
    pixels = depth_metrics(depth, gt, valid)["abs_rel"]
    frames = depth_metrics(depth, gt, valid, average="frames")["abs_rel"]
    assert pixels == pytest.approx((0.1 + 2 * 0.5) / 12)
    assert frames == pytest.approx((0.1 / 10 + 0.5) / 2)
    with pytest.raises(ValueError, match="average"):
        depth_metrics(depth, gt, valid, average="median")
