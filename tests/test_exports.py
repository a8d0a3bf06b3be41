"""Depth mapping, EXR and PLY outputs: the formulas, the files read back, and eval-depth on each format."""

import json
import shutil
import sys

import cv2
import numpy as np
import pytest

from rollingdepth.frontends import run_video as cli
from rollingdepth.frontends import eval_depth as eval_cli
from rollingdepth.runtime.run_config import option_name
from rollingdepth.io.exports import DepthMapping, PinholeCamera, check_openexr, point_cloud, read_exr, write_exr, write_ply
from rollingdepth.runtime.outputs import outputs_complete
from rollingdepth.runtime.run_config import RunConfig
from rollingdepth.io.video_io import load_source

from .conftest import TINY_CHECKPOINT, make_clip, require_module
from .test_run_video import assert_no_partial_files, write_clip

OpenEXR = require_module("OpenEXR")
plyfile = require_module("plyfile")

BASE = ["-c", str(TINY_CHECKPOINT), "--res", "32", "--dtype", "fp32", "-d", "1,3", "--no-save-sbs", "--cmap", "Greys_r", "-q"]


def run(args, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


# ----------------------------------------------------------------------------- formulas and files
def test_depth_mapping_is_one_linear_map_onto_inverse_depth():
    m = DepthMapping("depth", vmin=-1.0, vmax=1.0, near=0.5, far=20.0)
    pred = np.array([[-1.0, 0.0, 1.0, 0.5]], dtype=np.float32)
    depth = m.apply(pred)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth[0, [0, 2]], [20.0, 0.5], rtol=1e-7)  # the run's min -> FAR, max -> NEAR
    expected = 1.0 / (1 / 20 + (pred.astype(np.float64) + 1) / 2 * (1 / 0.5 - 1 / 20))
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    inverse = 1.0 / depth.astype(np.float64)  # affine in the prediction: equal steps stay equal
    np.testing.assert_allclose(np.diff(inverse[0, :3]), [0.975, 0.975], rtol=1e-5)
    assert m.value_range == (0.5, 20.0) and "1/near - 1/far" in m.formula
    raw = DepthMapping("inverse", vmin=-1.0, vmax=1.0)
    assert raw.apply(pred) is pred and raw.value_range == (-1.0, 1.0)
    assert DepthMapping("depth", 0.3, 0.3, near=1.0, far=4.0).apply(np.full((2, 2), 0.3))[0, 0] == 4.0  # constant -> FAR
    with pytest.raises(ValueError, match="depth_range"):
        DepthMapping("depth", -1.0, 1.0, near=5.0, far=2.0)


def test_exr_is_float32_z_and_exact(tmp_path):
    rng = np.random.default_rng(0)
    depth = (rng.standard_normal((6, 9)) * 1e3).astype(np.float32)
    depth[0, 0], depth[1, 1] = 1e-30, 3.4e38
    write_exr(tmp_path / "d.exr", depth)
    with OpenEXR.File(str(tmp_path / "d.exr")) as f:
        channels = f.channels()
        assert list(channels) == ["Z"] and channels["Z"].pixels.dtype == np.float32
    assert np.array_equal(read_exr(tmp_path / "d.exr"), depth)


def test_point_cloud_against_the_pinhole_formula(tmp_path):
    h, w, stride = 5, 8, 2
    depth = np.linspace(1.0, 9.0, h * w, dtype=np.float32).reshape(h, w)
    depth[4, 6] = np.nan  # dropped
    rgb = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    camera = PinholeCamera.for_size((h, w), fov_deg=90.0)
    assert camera.focal == pytest.approx(w / 2) and (camera.cx, camera.cy) == (4.0, 2.5)
    write_ply(tmp_path / "p.ply", point_cloud(depth, rgb, camera, stride), comment="test")
    ply = plyfile.PlyData.read(str(tmp_path / "p.ply"))
    assert ply.byte_order == "<" and not ply.text
    vertex = ply["vertex"]
    assert vertex.count == 3 * 4 - 1
    points = {(round(float(x), 5), round(float(y), 5)): (float(z), (r, g, b)) for x, y, z, r, g, b in
              zip(vertex["x"], vertex["y"], vertex["z"], vertex["red"], vertex["green"], vertex["blue"])}
    for v, u in ((0, 0), (2, 4), (4, 2), (2, 6)):
        z = float(depth[v, u])
        x, y = (u + 0.5 - w / 2) * z / (w / 2), (v + 0.5 - h / 2) * z / (w / 2)
        assert points[(round(x, 5), round(y, 5))] == (pytest.approx(z), tuple(rgb[v, u]))
    # a focal length in pixels of the input video scales with the output's width
    assert PinholeCamera.for_size((h, w), focal_px=100.0, input_width=4 * w).focal == pytest.approx(25.0)


def test_missing_openexr_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # import fails
    with pytest.raises(ValueError, match=r"--save-exr: .*rollingdepth\[exr\]"):
        check_openexr(option_name("save_exr"))
    write_clip(tmp_path / "a.mp4", make_clip(3))
    code, out, err = run([tmp_path / "a.mp4", *BASE, "--save-exr", "-o", tmp_path / "o"], capsys)
    text = " ".join(err.split())
    assert code == 2 and "--save-exr" in text and "rollingdepth[exr]" in text and "Traceback" not in text


@pytest.mark.parametrize("args,message", [
    (["--depth-out", "depth"], "--depth-range"),
    (["--depth-range", "1,10"], "--depth-out depth"),
    (["--depth-out", "depth", "--depth-range", "10,1"], "--depth-range"),
    (["--depth-out", "metric"], "--depth-out"),
    (["--save-ply"], "--depth-out depth"),
    (["--depth-out", "depth", "--depth-range", "1,10", "--save-ply", "--fov", "0"], "--fov"),
    (["--depth-out", "depth", "--depth-range", "1,10", "--save-ply", "--fov", "50", "--focal", "500"], "--focal"),
    (["--depth-out", "depth", "--depth-range", "1,10", "--save-ply", "--ply-stride", "0"], "--ply-stride"),
])
def test_bad_export_options_one_line(tmp_path, capsys, args, message):
    code, out, err = run([tmp_path / "missing.mp4", *BASE, *args, "-o", tmp_path / "o"], capsys)
    text = " ".join(err.split())
    assert code == 2 and message in text and "Traceback" not in text, text


# ----------------------------------------------------------------------------- end to end
def test_every_format_reads_back_against_the_npy(tmp_path, capsys):
    """Inverse and depth runs of one clip: the depth npy is the documented map of the inverse
    one; EXR equals the npy exactly, PNG16 within one step, PLY points follow the formula,
    and eval-depth scores every format alike."""
    clip = write_clip(tmp_path / "a.mp4", make_clip(7, 24, 32, seed=3))
    code, _, err = run([clip, *BASE, "--save-exr", "--save-png16", "-o", tmp_path / "inv"], capsys)
    assert code == 0, err
    code, _, err = run([clip, *BASE, "--depth-out", "depth", "--depth-range", "0.5", "20", "--save-exr", "--save-png16",
                        "--save-ply", "3", "--fov", "70", "-o", tmp_path / "dep"], capsys)
    assert code == 0, err
    inverse = np.load(tmp_path / "inv" / "a_pred.npy")
    depth = np.load(tmp_path / "dep" / "a_pred.npy")
    report = json.loads((tmp_path / "dep" / "a_run.json").read_text())
    lo, hi = report["depth_range"]
    assert [lo, hi] == json.loads((tmp_path / "inv" / "a_run.json").read_text())["depth_range"]
    expected = 1.0 / (1 / 20 + (inverse.astype(np.float64) - lo) / (hi - lo) * (1 / 0.5 - 1 / 20))
    np.testing.assert_allclose(depth, expected, rtol=1e-5)  # one mapping over the whole video
    assert depth.min() == pytest.approx(0.5) and depth.max() == pytest.approx(20.0)
    assert report["depth_output"]["mode"] == "depth" and report["depth_output"]["near"] == 0.5
    assert report["settings"]["depth_range"] == [0.5, 20.0]

    for folder, values in (("inv", inverse), ("dep", depth)):
        out = tmp_path / folder
        rep = json.loads((out / "a_run.json").read_text())
        exrs = sorted((out / "a_exr").iterdir())
        assert [p.name for p in exrs] == [f"{i:06d}.exr" for i in range(7)]
        for i, p in enumerate(exrs):
            assert np.array_equal(read_exr(p), values[i]), (folder, i)  # exact in float32
        p0, p1 = rep["png16_range"]
        for i in (0, 4, 6):
            png = cv2.imread(str(out / "a_depth16" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            assert png.dtype == np.uint16
            np.testing.assert_allclose(p0 + png / 65535 * (p1 - p0), values[i], atol=(p1 - p0) / 65535)
        assert_no_partial_files(out)

    plys = sorted(p.name for p in (tmp_path / "dep" / "a_ply").iterdir())
    assert plys == ["000000.ply", "000003.ply", "000006.ply"]
    rgb = load_source(clip).read()
    focal = 16 / np.tan(np.radians(35))
    assert report["point_cloud"]["focal_px"] == pytest.approx(focal)
    vertex = plyfile.PlyData.read(str(tmp_path / "dep" / "a_ply" / "000003.ply"))["vertex"]
    assert vertex.count == 12 * 16  # every 2nd pixel of 24 x 32
    for v, u in ((0, 0), (0, 2), (2, 0), (10, 14)):
        n = (v // 2) * 16 + u // 2
        z = float(depth[3, v, u])
        assert vertex["z"][n] == pytest.approx(z, rel=1e-6)
        assert vertex["x"][n] == pytest.approx((u + 0.5 - 16) * z / focal, rel=1e-5, abs=1e-6)
        assert vertex["y"][n] == pytest.approx((v + 0.5 - 12) * z / focal, rel=1e-5, abs=1e-6)
        assert (vertex["red"][n], vertex["green"][n], vertex["blue"][n]) == tuple(rgb[3, v, u])

    # --skip-existing knows the new outputs
    cfg = RunConfig.build(None, dict(depth_out="depth", depth_range=[0.5, 20], save_exr=True, save_png16=True, save_ply=3,
                                     save_sbs=False, cmaps=["Greys_r"]))
    assert outputs_complete(tmp_path / "dep", "a", cfg)
    shutil.rmtree(tmp_path / "dep" / "a_ply")
    assert not outputs_complete(tmp_path / "dep", "a", cfg)

    # eval-depth: every format of both runs scores the same
    gt = 1.0 / (0.3 + 0.2 * (inverse.astype(np.float64) - lo) / (hi - lo)) + np.random.default_rng(0).uniform(0, 0.05, inverse.shape)
    np.save(tmp_path / "gt.npy", gt.astype(np.float32))
    scores = {}
    for pred in ("inv/a_pred.npy", "inv/a_exr", "inv/a_depth16", "dep/a_pred.npy", "dep/a_exr", "dep/a_depth16"):
        with pytest.raises(SystemExit) as info:
            eval_cli.main(["--pred", str(tmp_path / pred), "--gt", str(tmp_path / "gt.npy"), "-o", str(tmp_path / "ev"), "-q"])
        assert info.value.code in (0, None), capsys.readouterr().err
        scores[pred] = json.loads((tmp_path / "ev" / "metrics.json").read_text())["videos"]["a"]
    first = scores["inv/a_pred.npy"]
    assert first["abs_rel"] < 0.05  # the GT is affine in the prediction's inverse depth, plus noise
    for pred, metrics in scores.items():
        for key in ("abs_rel", "rmse", "delta1"):
            assert metrics[key] == pytest.approx(first[key], rel=1e-3, abs=1e-6), (pred, key)
