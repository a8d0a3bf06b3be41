"""eval-depth (rollingdepth/frontends/eval_depth.py) end to end: --pred/--gt files and folders, a run-video
prediction scored, --dataset runs, resumes and usage errors."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from .test_metrics import REPO, scene  # noqa: F401  (scene: a fixture)


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
