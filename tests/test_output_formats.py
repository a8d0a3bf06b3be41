"""The output formats' registry (rollingdepth/io/output_formats.py): each output declared once,
the lists read from it, and eval-depth reading every depth mode back as the prediction."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from rollingdepth.frontends import eval_depth as eval_cli
from rollingdepth.frontends import run_video as cli
from rollingdepth.io.exports import DepthMapping, VideoMapping
from rollingdepth.io.output_formats import (RUN_REPORT, OutputFormat, expected_names, output_format, output_formats,
                                            output_settings, register)
from rollingdepth.runtime.run_config import RunConfig, run_options

from .conftest import TINY_CHECKPOINT, make_clip
from .test_architecture import _docstrings
from .test_run_video import write_clip

PACKAGE = Path(__file__).resolve().parent.parent / "rollingdepth"
BASE = ["-c", TINY_CHECKPOINT, "--res", "32", "--dtype", "fp32", "-d", "1,3", "--no-save-sbs", "--cmap", "Greys_r", "-q"]


# ----------------------------------------------------------------------------- one declaration each
def _template(text: str) -> str:
    """``{stem}_{cmap}.mp4`` -> ``{}_{}.mp4``: what is filled in, as ``{}``."""
    return re.sub(r"\{[^{}]*\}", "{}", text)


def _strings(tree: ast.AST) -> list[str]:
    """The string constants and f-strings (formatted values as ``{}``) in code, docstrings left out."""
    docs, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            found.append(_template(node.value))
    return found


def spelled(suffixes: list[str], root: Path = PACKAGE) -> dict[str, set[str]]:
    """Each file suffix -> the modules of ``root`` whose code writes it as a file name's end (not
    inside a word: ``save_exr`` is no ``_exr``)."""
    patterns = {s: re.compile(r"(?<![A-Za-z0-9])" + re.escape(_template(s)) + r"(?![A-Za-z0-9_])") for s in suffixes}
    where: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        for text in _strings(ast.parse(path.read_text(), filename=str(path))):
            for suffix, pattern in patterns.items():
                if pattern.search(text):
                    where[suffix].add(str(path.relative_to(root.parent)))
    return where


def test_each_output_suffix_is_written_in_one_module():
    """A file name of an output is written in its declaration; everything else asks the registry."""
    suffixes = [f.suffix for f in output_formats()]
    where = spelled(suffixes)
    assert set(where) == set(suffixes), "the scan does not see the declarations"
    repeated = {s: sorted(m) for s, m in where.items() if m != {"rollingdepth/io/output_formats.py"}}
    assert not repeated, "\n".join(f"{s}: {', '.join(m)}" for s, m in sorted(repeated.items()))


def test_the_scan_sees_a_suffix_written_twice(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text('"""Writes {stem}_pred.npy."""\nSUFFIX = "_pred.npy"\nKEY = "save_exr"\n')
    (package / "b.py").write_text('def f(stem, c):\n    return [f"{stem}_pred.npy", f"{stem}_{c}.mp4", "*_exr/"]\n')
    found = spelled(["_pred.npy", "_{cmap}.mp4", "_exr", "_ply"], package)
    assert found == {"_pred.npy": {"pkg/a.py", "pkg/b.py"}, "_{cmap}.mp4": {"pkg/b.py"}, "_exr": {"pkg/b.py"}}


def test_settings_options_and_lists_come_from_the_declarations():
    options, fields = run_options(), {f.name: f for f in dataclasses.fields(RunConfig)}
    run_video_names = [p.name for p in cli.run_video_params()]
    for fmt in output_formats():
        if fmt.setting is not None:
            assert options[fmt.setting].flags == fmt.option.flags and fmt.setting in run_video_names
            default = fields[fmt.setting].default_factory() if callable(fields[fmt.setting].default_factory) \
                else fields[fmt.setting].default
            assert default == (list(fmt.default) if isinstance(fmt.default, tuple) else fmt.default)
    assert set(output_settings()) <= set(run_video_names)
    cfg = RunConfig.build(None, dict(save_png16=True, cmaps=["viridis"]))
    assert expected_names("a", cfg) == ["a_pred.npy", "a_viridis.mp4", "a_rgbd.mp4", "a_depth16", "a_run.json"]
    assert RUN_REPORT.stem_of("my_clip_run.json") == "my_clip" and RUN_REPORT.stem_of("_run.json") is None
    with pytest.raises(ValueError, match="declared twice"):
        register("npy")(type("Again", (OutputFormat,), {}))
    with pytest.raises(ValueError, match="unknown"):
        output_format("gif")


def test_the_page_turns_on_the_formats_it_offers():
    from rollingdepth.frontends.app import AppSettings, DepthService, PageForm

    service = DepthService.__new__(DepthService)
    service.settings = AppSettings(checkpoint=str(TINY_CHECKPOINT), dtype="fp32", device="cpu")
    cfg = service.config(PageForm(res=32, dilations="1,3", snippet="3", cmap="Greys_r"))
    for fmt in output_formats():
        if fmt.setting is not None and isinstance(fmt.default, bool):
            assert getattr(cfg, fmt.setting) == fmt.download, fmt.name


# ----------------------------------------------------------------------------- every mode reads back
@pytest.mark.parametrize("mapping", [
    DepthMapping("inverse", -1.0, 1.5),
    DepthMapping("depth", -1.0, 1.5, near=0.5, far=20.0),
    DepthMapping("fitted", -1.0, 1.5, far=100.0, scale=0.3, shift=0.8),
])
def test_to_inverse_undoes_every_mapping(mapping):
    pred = np.linspace(-1.0, 1.5, 24, dtype=np.float32).reshape(2, 3, 4)
    again = DepthMapping.from_dict(json.loads(json.dumps(mapping.to_dict())))
    assert again == mapping
    np.testing.assert_allclose(again.to_inverse(mapping.apply(pred)), pred, atol=1e-6)


def test_a_per_shot_mapping_reads_back_frame_by_frame():
    shots = VideoMapping((DepthMapping("fitted", -1, 1, far=50.0, scale=0.5, shift=1.0),
                          DepthMapping("depth", -1, 1, near=1.0, far=10.0)), (0, 2))
    pred = np.random.default_rng(0).uniform(-1, 1, (5, 3, 4)).astype(np.float32)
    values = np.stack([shots.at(i).apply(pred[i]) for i in range(5)])
    again = VideoMapping.from_dict(json.loads(json.dumps(shots.to_dict())))
    assert again.firsts == (0, 2)
    np.testing.assert_allclose(again.to_inverse(values), pred, atol=1e-6)


def _run(args, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    assert info.value.code == 0, capsys.readouterr().err


def _scores(pred: Path, gt: Path, out: Path, capsys) -> dict:
    with pytest.raises(SystemExit) as info:
        eval_cli.main(["--pred", str(pred), "--gt", str(gt), "-o", str(out), "-q"])
    assert info.value.code in (0, None), capsys.readouterr().err
    return json.loads((out / "metrics.json").read_text())["videos"]["a"]


def _points(inverse: np.ndarray, shots: list[tuple[int, int]], path: Path) -> Path:
    """Known distances at a few pixels of each shot, with its own inverse depth ``a * pred + b``."""
    rng = np.random.default_rng(1)
    lines = ["frame,x,y,depth"]
    for k, (first, count) in enumerate(shots):
        a, b = (0.2, 1.0) if k % 2 == 0 else (0.5, 2.5)
        for _ in range(6):
            f, y, x = int(rng.integers(first, first + count)), int(rng.integers(0, 24)), int(rng.integers(0, 32))
            lines.append(f"{f},{x},{y},{1.0 / (a * inverse[f, y, x] + b):.9g}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("cuts,mode", [([], "fitted"), ([6], "per shot")])
def test_eval_depth_scores_a_depth_points_output_as_the_inverse_output(tmp_path, capsys, cuts, mode):
    """--depth-points outputs (one shot: "fitted"; two shots: "per shot", each with its own fit)
    read back as the prediction: every format scores as the run's inverse-depth npy."""
    clip = write_clip(tmp_path / "a.mp4", make_clip(12, 24, 32, seed=4))
    shots_args = []
    if cuts:
        (tmp_path / "cuts.txt").write_text("".join(f"{c}\n" for c in cuts))
        shots_args = ["--shots", tmp_path / "cuts.txt"]
    _run([clip, *BASE, *shots_args, "-o", tmp_path / "inv"], capsys)
    inverse = np.load(tmp_path / "inv" / "a_pred.npy")
    bounds = [0, *cuts, 12]
    points = _points(inverse, [(a, b - a) for a, b in zip(bounds, bounds[1:])], tmp_path / "points.csv")
    _run([clip, *BASE, *shots_args, "--depth-points", points, "--save-png16", "--save-exr", "--save-tiff",
          "--save-depth-video", "-o", tmp_path / "dep"], capsys)
    assert json.loads((tmp_path / "dep" / "a_run.json").read_text())["depth_output"]["mode"] == mode

    lo, hi = float(inverse.min()), float(inverse.max())
    gt = 1.0 / (0.3 + 0.2 * (inverse.astype(np.float64) - lo) / (hi - lo))
    np.save(tmp_path / "gt.npy", (gt + np.random.default_rng(0).uniform(0, 0.05, gt.shape)).astype(np.float32))
    first = _scores(tmp_path / "inv" / "a_pred.npy", tmp_path / "gt.npy", tmp_path / "ev", capsys)
    for pred in ("a_pred.npy", "a_exr", "a_depth16", "a_tiff16", "a_depth16.mkv"):
        metrics = _scores(tmp_path / "dep" / pred, tmp_path / "gt.npy", tmp_path / f"ev_{pred}", capsys)
        for key in ("abs_rel", "rmse", "delta1"):
            assert metrics[key] == pytest.approx(first[key], rel=1e-3, abs=1e-6), (pred, key)

    from rollingdepth.evaluation.prediction_files import load_prediction

    np.testing.assert_allclose(load_prediction(tmp_path / "dep" / "a_pred.npy"), inverse, atol=1e-4)


# ----------------------------------------------------------------------------- a format added: --save-tiff
def test_tiff_frames_hold_the_png16_values(tmp_path, capsys):
    """--save-tiff: 16-bit grayscale TIFFs with the PNG16's integers, their range in run.json; read back
    within one step of the npy; a finished video has them; eval-depth takes the npy of a stem first."""
    import cv2
    from PIL import Image

    from rollingdepth.evaluation.prediction_files import collect, load_prediction
    from rollingdepth.runtime.outputs import outputs_complete

    clip = write_clip(tmp_path / "a.mp4", make_clip(5, 24, 32, seed=2))
    _run([clip, *BASE, "--save-png16", "--save-tiff", "-o", tmp_path / "o"], capsys)
    out, npy = tmp_path / "o", np.load(tmp_path / "o" / "a_pred.npy")
    report = json.loads((out / "a_run.json").read_text())
    assert report["tiff16_range"] == report["png16_range"] and "a_tiff16" in report["outputs"]
    tiffs = sorted(p.name for p in (out / "a_tiff16").iterdir())
    assert tiffs == [f"{i:06d}.tif" for i in range(5)]
    for i in range(5):
        with Image.open(out / "a_tiff16" / f"{i:06d}.tif") as image:
            assert image.mode == "I;16" and image.format == "TIFF"
            tiff = np.asarray(image)
        assert np.array_equal(tiff, cv2.imread(str(out / "a_depth16" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED))
    lo, hi = report["tiff16_range"]
    np.testing.assert_allclose(load_prediction(out / "a_tiff16"), npy, atol=(hi - lo) / 65535)
    cfg = RunConfig.build(None, dict(save_sbs=False, cmaps=["Greys_r"], save_png16=True, save_tiff=True))
    assert outputs_complete(out, "a", cfg)
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "gt" / "a.npy", npy)
    [job] = collect(out, tmp_path / "gt", None, None)
    assert job["pred"] == out / "a_pred.npy"  # the exact format of the stem


# ----------------------------------------------------------------------------- the 16-bit depth video
def test_the_depth_video_holds_the_png16_values_at_the_sources_rate(tmp_path, capsys):
    """--save-depth-video: FFV1 gray16 in Matroska with the PNG16's integers frame for frame, at the
    source's exact rate; eval-depth reads it back within one step of the npy."""
    import cv2

    from rollingdepth.evaluation.prediction_files import load_prediction
    from rollingdepth.io.av_video import probe_stream
    from rollingdepth.io.depth_video import read_depth_video

    clip = write_clip(tmp_path / "a.mp4", make_clip(6, 24, 32, seed=3))
    _run([clip, *BASE, "--save-png16", "--save-depth-video", "-o", tmp_path / "o"], capsys)
    out, npy = tmp_path / "o", np.load(tmp_path / "o" / "a_pred.npy")
    report = json.loads((out / "a_run.json").read_text())
    assert report["depth_video_range"] == report["png16_range"] and "a_depth16.mkv" in report["outputs"]
    frames = list(read_depth_video(out / "a_depth16.mkv"))
    assert len(frames) == 6
    for i, frame in enumerate(frames):
        assert np.array_equal(frame, cv2.imread(str(out / "a_depth16" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED))
    assert probe_stream(out / "a_depth16.mkv").rate == probe_stream(clip).rate
    lo, hi = report["depth_video_range"]
    np.testing.assert_allclose(load_prediction(out / "a_depth16.mkv"), npy, atol=(hi - lo) / 65535)
