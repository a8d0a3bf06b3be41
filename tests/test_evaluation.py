import json
import subprocess
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


def _eval(args, capsys):
    from rollingdepth.frontends import eval_depth as eval_cli

    with pytest.raises(SystemExit) as info:
        eval_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_eval_cli_pngs_with_gt_scale_and_errors(tmp_path, scene, capsys):
    _, gt = scene
    png_dir = tmp_path / "gt_png"
    png_dir.mkdir()
    for i, g in enumerate(gt):
        cv2.imwrite(str(png_dir / f"{i:04d}.png"), np.round(g * 5000).astype(np.uint16))
    pred = tmp_path / "scene_pred.npy"
    np.save(pred, (1 / gt).astype(np.float32))
    code, out, err = _eval(["--pred", pred, "--gt", png_dir, "--gt-scale", 5000, "-o", tmp_path / "e"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert report["videos"]["scene"]["abs_rel"] < 1e-4  # PNG quantisation only
    assert set(report["mean"]) == {"abs_rel", "rmse", "delta1", "delta2", "delta3"}
    np.save(tmp_path / "short_pred.npy", np.ones((3, 48, 80), np.float32))
    code, out, err = _eval(["--pred", tmp_path / "short_pred.npy", "--gt", png_dir, "-o", tmp_path / "e2"], capsys)
    assert code == 1 and "frame counts differ" in " ".join(err.split()) and "Traceback" not in err
    code, out, err = _eval(["--pred", tmp_path / "missing.npy", "--gt", png_dir], capsys)
    assert code == 2 and "no such file" in err


def test_run_video_then_eval_depth_end_to_end(tmp_path, capsys):
    """The synthetic clip through run-video (tiny random checkpoint) and eval-depth."""
    from rollingdepth.frontends import run_video as cli

    from .conftest import TINY_CHECKPOINT

    clip, gt_path = tmp_path / "scene.mp4", tmp_path / "gt" / "scene.npy"
    gt_path.parent.mkdir()
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_scene.py"), clip, "--frames", "10",
                    "--size", "48x80", "--depth-out", gt_path], check=True, capture_output=True)
    with pytest.raises(SystemExit) as info:
        cli.main([str(clip), "-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,3", "--dtype", "fp32",
                  "-o", str(tmp_path / "pred"), "-q"])
    assert info.value.code == 0
    code, out, err = _eval(["--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--rgb", tmp_path, "-o", tmp_path / "eval"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    metrics = report["videos"]["scene"]
    assert set(metrics) == {"abs_rel", "rmse", "delta1", "delta2", "delta3", "opw"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert (tmp_path / "eval" / "metrics.csv").read_text().splitlines()[0] == "video,abs_rel,rmse,delta1,delta2,delta3,opw"
    assert (tmp_path / "eval" / "scene_per_frame.png").stat().st_size > 1000
    assert "eval-depth" in out


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


# ----------------------------------------------------------------------------- eval-depth --dataset
def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_depth_dataset_runs_the_model_scores_and_resumes(tmp_path, capsys):
    """ScanNet format (crop, cameras) through the tiny checkpoint; a second call only scores."""
    from .conftest import TINY_CHECKPOINT
    from .test_datasets import make_scannet

    make_scannet(tmp_path / "scannet", tmp_path / "split", names=("scene0707_00", "scene0708_00"), frames=3,
                 h=96, w=128)
    args = ["--dataset", "scannet", "--root", tmp_path / "scannet", "--split", tmp_path / "split",
            "-o", tmp_path / "eval", "-c", TINY_CHECKPOINT, "-p", "none", "--res", "32", "-d", "1", "--dtype", "fp32"]
    code, out, err = _eval(args, capsys)
    assert code == 0, err
    assert "scene0708_00: 3 frames predicted" in err
    rows = _csv_rows(tmp_path / "eval" / "metrics.csv")
    assert [r["sequence"] for r in rows] == ["scene0707_00", "scene0708_00", "mean"]
    assert all(float(r["abs_rel"]) >= 0 and float(r["tae"]) >= 0 and float(r["opw"]) >= 0 for r in rows)
    assert rows[0]["frames"] == "3"
    table = _csv_rows(tmp_path / "eval" / "table.csv")
    assert len(table) == 1 and table[0]["sequences"] == "2/2" and table[0]["method"].startswith("ours: preset none")
    assert float(table[0]["abs_rel_pct"]) == pytest.approx(100 * float(rows[2]["abs_rel"]), abs=0.051)
    md = (tmp_path / "eval" / "table.md").read_text()
    assert "| method | sequences | AbsRel (%) ↓ | δ1 (%) ↑ | OPW ↓ | TAE (%) ↓ |" in md
    assert "| scene0707_00 | 3 |" in md and "not shown for split" in md  # a custom split: no published row
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["settings"]["min_depth"] == 1e-3 and report["settings"]["max_depth"] == 10.0
    pred = np.load(tmp_path / "eval" / "predictions" / "scene0707_00_pred.npy")
    assert pred.shape[0] == 3 and not list((tmp_path / "eval" / "predictions").glob(".*frames"))
    # resumed: nothing is predicted again, the scores are the same
    code, out, err = _eval(args, capsys)
    assert code == 0 and err.count("prediction complete, skipped") == 2 and "predicted" not in err.replace("prediction complete", "")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["mean"] == report["mean"]
    # other settings do not reuse those predictions
    code, out, err = _eval([*args[:-4], "-d", "1,2", "--dtype", "fp32"], capsys)
    assert code == 2 and "made with other settings" in err and "dilations" in err and "Traceback" not in err


def _bonn_paper_split(root: Path, h: int = 16, w: int = 24) -> dict[str, np.ndarray]:
    """Files at exactly the paths of the bundled Bonn split (5 sequences x 110 frames), tiny frames."""
    from rollingdepth.evaluation.datasets import load_sequences

    from .test_datasets import depth_map, rgb_image, write_png16, write_rgb

    for name in ("rgbd_bonn_balloon2",):
        (root / name).mkdir(parents=True)
    truth = {}
    for s, seq in enumerate(load_sequences("bonn", root)):
        stored = {}  # one depth file may serve two frames (crowd2 pairs by nearest timestamp)
        for i, (rgb_path, depth_path) in enumerate(zip(seq.rgb, seq.depth)):
            write_rgb(rgb_path, rgb_image(h, w, i))
            if depth_path not in stored:
                stored[depth_path] = write_png16(depth_path, depth_map(h, w, s + i), 5000) / 5000
        truth[seq.name] = np.stack([stored[p] for p in seq.depth])
    return truth


def test_eval_depth_scores_predictions_on_the_paper_split_beside_the_published_numbers(tmp_path, capsys):
    truth = _bonn_paper_split(tmp_path / "bonn")
    preds = tmp_path / "preds"
    preds.mkdir()
    for name, depth in truth.items():  # a perfect prediction: disparity, any scale and shift
        np.save(preds / f"{name}_pred.npy", np.where(depth > 0, 3.0 / np.where(depth > 0, depth, 1) - 0.2, 0).astype(np.float32))
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path / "bonn", "--predictions", preds,
                            "-o", tmp_path / "eval"], capsys)
    assert code == 0, err
    table = {r["method"]: r for r in _csv_rows(tmp_path / "eval" / "table.csv")}
    ours = table[f"predictions in {preds}"]
    assert ours["sequences"] == "5/5" and float(ours["abs_rel_pct"]) == 0.0 and float(ours["delta1_pct"]) == 100.0
    paper = table["RollingDepth, published"]  # Ke et al. 2025, Bonn: AbsRel 7.9 %, delta1 93.9 %
    assert (paper["abs_rel_pct"], paper["delta1_pct"]) == ("7.9", "93.9") and "2411.19189" in paper["source"]
    fast = table["RollingDepth fast, published"]  # the fast preset's row: 7.9 % and 93.6 %
    assert (fast["abs_rel_pct"], fast["delta1_pct"]) == ("7.9", "93.6")
    md = (tmp_path / "eval" / "table.md").read_text()
    assert "| RollingDepth, published | - | 7.9 | 93.9 |" in md and "Ke et al." in md
    assert len(_csv_rows(tmp_path / "eval" / "metrics.csv")) == 6
    # a missing prediction fails its sequence only
    (preds / "rgbd_bonn_crowd3_pred.npy").unlink()
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path / "bonn", "--predictions", preds,
                            "-o", tmp_path / "eval2", "-q"], capsys)
    assert code == 1 and "rgbd_bonn_crowd3: no prediction rgbd_bonn_crowd3_pred.npy" in " ".join(err.split())
    assert _csv_rows(tmp_path / "eval2" / "table.csv")[0]["sequences"] == "4/5"
    # --predictions does not run the model: run options are refused, in one line
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path / "bonn", "--predictions", preds, "--res", "64"], capsys)
    assert code == 2 and "--res: --predictions scores existing files" in err and "Traceback" not in err


def test_eval_depth_dataset_usage_errors(tmp_path, capsys):
    code, out, err = _eval(["--dataset", "bonn"], capsys)
    assert code == 2 and "--dataset needs --root" in err
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path, "--gt", tmp_path], capsys)
    assert code == 2 and "--pred/--gt/--rgb/--mask are for single files" in err
    code, out, err = _eval(["--dataset", "tum", "--root", tmp_path], capsys)
    assert code == 2 and "--dataset: unknown dataset 'tum'" in err
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path, "--split", "x"], capsys)
    assert code == 2 and "--split: unknown split 'x'" in err
    code, out, err = _eval(["--pred", tmp_path, "--split", "x"], capsys)
    assert code == 2 and "--split belongs to --dataset" in err
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path, "--average", "median"], capsys)
    assert code == 2 and "--average: unknown mode" in err
    from .test_datasets import make_bonn

    make_bonn(tmp_path / "bonn", tmp_path / "split", names=("rgbd_bonn_balloon2",), frames=1)
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path / "bonn", "--split", tmp_path / "split",
                            "-o", tmp_path / "eval", "-c", "no/such-checkpoint?"], capsys)
    assert code == 2 and "checkpoint" in err and len(err.strip().splitlines()) == 1
    code, out, err = _eval(["--dataset", "bonn", "--root", tmp_path / "bonn", "--split", tmp_path / "split",
                            "-o", tmp_path / "eval", "-p", "nonsense"], capsys)
    assert code == 2 and "--preset" in err
    assert "Traceback" not in out + err
