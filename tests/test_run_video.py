"""run-video end to end with the tiny checkpoint: outputs, presets, inputs, bad inputs, batches."""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from rollingdepth.frontends import run_video as cli
from rollingdepth.io.video_io import VideoWriter, natural_key

from .conftest import TINY_CHECKPOINT, held_run, make_clip, work_folders

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "samples" / "synthetic_scene.mp4"
BASE = ["-c", str(TINY_CHECKPOINT), "--res", "32", "--dtype", "fp32"]
FAST = [*BASE, "-d", "1,4"]


def run(args, capsys):
    """Run the command in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def write_clip(path: Path, frames: np.ndarray, fps: float = 12.0) -> Path:
    with VideoWriter(path, fps, frames.shape[1:3]) as w:
        for f in frames:
            w.write(f)
    return path


def read_video(path: Path):
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    frames = [np.frombuffer(b, np.uint8) for b in gen]
    return meta, len(frames)


def decode(path: Path) -> np.ndarray:
    """Every frame of a video as video_io reads it: uint8 ``[N, H, W, 3]``."""
    from rollingdepth.io.video_io import load_source

    return load_source(Path(path)).read()


def sbs_inputs(path: Path, width: int) -> np.ndarray:
    """The input half (left ``width`` columns) of a side-by-side ``_rgbd.mp4``, as int."""
    return decode(path)[:, :, :width].astype(int)


def assert_same_frames_in_order(shown: np.ndarray, frames: np.ndarray, tolerance: float = 4.0):
    """Frame i of ``shown`` (lossy) is frame i of ``frames``: within ``tolerance`` mean
    levels, and nearer to it than to any other frame."""
    assert len(shown) == len(frames)
    errors = np.abs(shown[:, None].astype(int) - frames[None].astype(int)).mean(axis=(2, 3, 4))  # [shown, frames]
    assert errors.diagonal().max() < tolerance, errors.diagonal()
    assert (errors.argmin(axis=1) == np.arange(len(frames))).all(), errors


# progress lines on a stderr that is not a terminal (rollingdepth.frontends.progress.LineRenderer)
_PROGRESS_LINE = re.compile(r"^(\d\d:\d\d:\d\d |loading checkpoint |Estimated )")


def error_line(err: str, message: str) -> str:
    """The one ``Error:`` line on stderr, which must hold ``message``; every other stderr line
    is a ``Warning:`` or the final progress bar (a message spilling onto a second line fails)."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, lines
    assert message in errors[0], (message, lines)
    others = [line for line in lines if not line.startswith(("Error:", "Warning:")) and "ETA" not in line
              and not _PROGRESS_LINE.match(line)]
    assert not others, lines
    return errors[0]


def assert_no_partial_files(folder: Path):
    leftovers = [p.name for p in folder.rglob("*") if ".partial" in p.name]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_clip(folder / "a.mp4", make_clip(7, 24, 32, seed=1))
    write_clip(folder / "b.mp4", make_clip(5, 24, 32, seed=2))
    return folder


def test_the_tests_never_use_the_users_throughput_cache(session_cache):
    """conftest's ``session_cache``: the time estimate's cache is the test session's, in this process
    and in those the tests start, never ``~/.cache/rollingdepth/throughput.json``, which a run rewrites."""
    from rollingdepth.runtime.estimate import cache_file

    assert cache_file() == session_cache / "rollingdepth" / "throughput.json"
    assert not cache_file().is_relative_to(Path.home() / ".cache")
    code = "from rollingdepth.runtime.estimate import cache_file; print(cache_file())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert child.returncode == 0 and child.stdout.strip() == str(cache_file()), child.stderr


# ----------------------------------------------------------------------------- smoke run
def test_smoke_run_on_sample_clip(tmp_path, capsys):
    """The CI smoke run: every output, read back."""
    assert SAMPLE.exists() and SAMPLE.stat().st_size < 1_000_000
    out_dir = tmp_path / "out"
    code, out, err = run([SAMPLE, *FAST, "--res", "48", "--frames", "16", "--save-png16", "--save-snippets", "-o", out_dir], capsys)
    assert code == 0, err
    stem = "synthetic_scene"
    report = json.loads((out_dir / f"{stem}_run.json").read_text())
    h, w = report["output_size"]
    assert (h, w) == (28, 48)  # 192x320 -> longer edge 48
    depth = np.load(out_dir / f"{stem}_pred.npy")
    assert depth.shape == (16, h, w) and depth.dtype == np.float32
    for name, width in ((f"{stem}_Spectral_r.mp4", w), (f"{stem}_Greys_r.mp4", w), (f"{stem}_rgbd.mp4", 2 * w + 16)):
        meta, count = read_video(out_dir / name)
        assert count == 16, name
        assert meta["fps"] == 24.0
        assert meta["size"] == (width, h)
        assert meta["codec"].startswith("h264")
    pngs = sorted((out_dir / f"{stem}_depth16").iterdir())
    assert [p.name for p in pngs][:2] == ["000000.png", "000001.png"] and len(pngs) == 16
    png = cv2.imread(str(pngs[3]), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (h, w)
    lo, hi = report["depth_range"]
    np.testing.assert_allclose(lo + png / 65535 * (hi - lo), depth[3], atol=(hi - lo) / 65535)
    snippets = np.load(out_dir / f"{stem}_snippets.npz")
    assert snippets["dilations"].tolist() == [1, 4]
    assert snippets["snippets_0"].shape == (14, 3, h, w)
    assert report["frames"] == 16 and report["settings"]["dilations"] == [1, 4]
    assert set(report["timings"]) >= {"encode", "snippets", "decode", "coalign", "merge", "write"}
    assert report["settings"]["store"] == "disk" and report["settings"]["decoded_maps"] == "kept"
    assert report["seconds_per_frame"] > 0 and report["peak_memory"]["host_mb"] > 0
    assert "torch" in report["versions"] and "diffusers" in report["versions"]
    assert "run-video summary" in out
    assert_no_partial_files(out_dir)


def test_restore_res_and_fps(tmp_path, capsys, clips):
    """Processing at 16x12 (--res 16): --restore-res brings every output back to the input's
    32x24, the prediction being the bilinear upsampling of the one at processing size."""
    small = [clips / "a.mp4", *FAST, "--res", "16", "--fps", "5", "--cmap", "inferno", "--no-save-sbs"]
    code, _, err = run([*small, "-o", tmp_path / "plain"], capsys)
    assert code == 0, err
    plain = np.load(tmp_path / "plain" / "a_pred.npy")
    assert plain.shape == (7, 12, 16)
    assert read_video(tmp_path / "plain" / "a_inferno.mp4")[0]["size"] == (16, 12)
    code, _, err = run([*small, "--restore-res", "-o", tmp_path], capsys)
    assert code == 0, err
    restored = np.load(tmp_path / "a_pred.npy")
    assert restored.shape == (7, 24, 32)
    import torch

    upsampled = torch.nn.functional.interpolate(torch.from_numpy(plain)[:, None], size=(24, 32), mode="bilinear",
                                                align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(restored, upsampled, atol=1e-5)
    meta, count = read_video(tmp_path / "a_inferno.mp4")
    assert count == 7 and meta["fps"] == 5.0 and meta["size"] == (32, 24)
    assert json.loads((tmp_path / "a_run.json").read_text())["output_size"] == [24, 32]
    assert not (tmp_path / "a_rgbd.mp4").exists() and not (tmp_path / "a_Spectral_r.mp4").exists()


def test_from_and_frames(tmp_path, capsys, clips):
    """--from 2 --frames 4 processes frames 2 to 5: video_io yields exactly those, and the
    side-by-side video shows them, in order."""
    from rollingdepth.io.video_io import load_source

    source = load_source(clips / "a.mp4")
    everything = source.read()
    assert len(everything) == 7
    np.testing.assert_array_equal(source.read(2, 4), everything[2:6])
    np.testing.assert_array_equal(np.stack(list(source.frames(5, 0))), everything[5:])
    code, _, err = run([clips / "a.mp4", *FAST, "--from", "2", "--frames", "4", "-o", tmp_path], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "a_pred.npy").shape == (4, 24, 32)
    assert json.loads((tmp_path / "a_run.json").read_text())["frames"] == 4
    assert_same_frames_in_order(sbs_inputs(tmp_path / "a_rgbd.mp4", 32), everything[2:6])


# ----------------------------------------------------------------------------- presets
def test_preset_and_overrides(tmp_path, capsys, clips):
    code, _, err = run([clips / "a.mp4", "-p", "paper", "-c", TINY_CHECKPOINT, "--res", "32", "--cap-dilation",
                        "--refine-step", "1", "--snip-len", "2", "-o", tmp_path], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "a_run.json").read_text())["settings"]
    assert s["coalign"] == "reference"  # from the preset
    assert s["cap_dilation"] is True and s["refine_step"] == 1 and s["snippet_lengths"] == [2, 2, 2][: len(s["dilations"])]
    assert s["processing_res"] == 32 and s["dtype"] == "float32"
    # 7 frames, n = 2: dilations 1, 10, 25 all cap to floor(7/2) - 1 = 2 -> [1, 2]
    assert s["dilations"] == [1, 2]


def test_yaml_preset_file(tmp_path, capsys, clips):
    preset = tmp_path / "mine.yaml"
    preset.write_text("processing_res: 32\ndilations: [1, 3]\ncmaps: [viridis]\nsave_sbs: false\n")
    code, _, err = run([clips / "b.mp4", "-p", preset, "-c", TINY_CHECKPOINT, "-d", "1", "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "b_run.json").read_text())
    assert report["settings"]["dilations"] == [1]  # the command line wins
    assert report["settings"]["cmaps"] == ["viridis"] and report["outputs"][1] == "b_viridis.mp4"


def _readme_preset_table() -> dict[str, dict]:
    """The README's preset table as {name: settings}, in the keys of the preset files."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.replace(" ", "").startswith("|preset|dilations|"))
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    assert lines[start + 1].replace("|", "").replace("-", "").strip() == "", "no table separator"
    columns = {"dilations": "dilations", "snippet length": "snippet_lengths", "dtype": "dtype",
               "refine steps": "refine_step", "resolution": "processing_res", "cap dilation": "cap_dilation",
               "co-alignment": "coalign"}
    assert set(header[1:]) == set(columns), header
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|"))))
        name = cells.pop("preset").split("(")[0].strip()
        row = {}
        for title, value in cells.items():
            key = columns[title]
            if key in ("dilations", "snippet_lengths"):
                row[key] = [int(v) for v in value.split(",")]
            elif key in ("refine_step", "processing_res"):
                row[key] = int(value)
            elif key == "cap_dilation":
                row[key] = {"yes": True, "no": False}[value]
            else:
                row[key] = value
        table[name] = row
    return table


def test_every_preset_loads_and_matches_the_readme():
    """The presets live in the package only (rollingdepth/configs/, one file per name in PRESETS);
    each loads by name and by path into valid settings, and the README's table says their values."""
    from rollingdepth.runtime.run_config import PRESET_DIR, PRESETS, RunConfig, load_preset

    assert not (REPO / "configs").exists(), "the presets are rollingdepth/configs/ only"
    assert sorted(p.name for p in PRESET_DIR.glob("*.yaml")) == sorted(f"{n}.yaml" for n in PRESETS)
    for name in PRESETS:
        path = PRESET_DIR / f"{name}.yaml"
        assert path.is_file() and not path.is_symlink(), name
        assert load_preset(name) == load_preset(path)
        RunConfig.build(name, {})  # valid settings, as run-video takes them
    table = _readme_preset_table()
    assert set(table) == {"fast", "fast1024", "full", "paper"}
    for name, want in table.items():
        got = load_preset(name)
        assert {key: got[key] for key in want} == want, name
        cfg = RunConfig.build(REPO / "rollingdepth" / "configs" / f"{name}.yaml", {})  # the path the README gives
        assert {key: getattr(cfg, key) for key in want} == want
    readme = (REPO / "README.md").read_text()
    assert "| fast (default) |" in readme and "`rollingdepth/configs/*.yaml`" in readme
    default = RunConfig.build(None, {})
    assert {key: getattr(default, key) for key in table["fast"]} == table["fast"]


def test_repeated_and_comma_options_agree():
    from rollingdepth.runtime.run_config import parse_numbers

    assert parse_numbers(["1,10,25"], "-d") == parse_numbers(["1", "10", "25"], "-d") == [1, 10, 25]
    assert parse_numbers("1, 10 25", "-d") == [1, 10, 25] and parse_numbers(None, "-d") is None
    assert parse_numbers(["0.5,20"], "--depth-range", float) == [0.5, 20.0]
    with pytest.raises(ValueError, match=r"^--dilations: 'x' is not an integer$"):
        parse_numbers(["1,x"], "--dilations")
    with pytest.raises(ValueError, match=r"^--depth-range: '1m' is not a number$"):
        parse_numbers(["0,1m"], "--depth-range", float)


# ----------------------------------------------------------------------------- input kinds
def test_folder_of_videos_and_list_file(tmp_path, capsys, clips):
    code, out, err = run([clips, *FAST, "-o", tmp_path / "folder"], capsys)
    assert code == 0, err
    assert (tmp_path / "folder" / "a_run.json").exists() and (tmp_path / "folder" / "b_run.json").exists()
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my clips\n\n{clips / 'b.mp4'}\n  # a.mp4 is skipped\n")
    code, _, err = run([listing, *FAST, "-o", tmp_path / "list"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "list").glob("*_run.json")) == ["b_run.json"]


def test_image_folder_and_glob(tmp_path, capsys):
    """PNG frames (lossless) come back exactly, in natural order (frame2 before frame10, which
    a plain sort would swap), from a folder and from a glob; the run shows them in that order."""
    from rollingdepth.io.video_io import load_source, open_source

    frames = make_clip(11, 24, 32)
    folder = tmp_path / "shot"
    folder.mkdir()
    for i in np.random.default_rng(0).permutation(11):  # written out of order
        cv2.imwrite(str(folder / f"frame{i}.png"), frames[i][..., ::-1])
    for spec in (folder, str(folder / "frame*.png")):
        (entry,) = open_source(spec)
        np.testing.assert_array_equal(load_source(entry).read(), frames)
    code, _, err = run(["-i", folder, *FAST, "-o", tmp_path / "o1"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "o1" / "shot_pred.npy").shape == (11, 24, 32)
    # H.264 smooths the clip's pixel noise, ~9 levels here; neighbouring frames differ by ~13 more
    assert_same_frames_in_order(sbs_inputs(tmp_path / "o1" / "shot_rgbd.mp4", 32), frames, tolerance=12)
    code, _, err = run([str(folder / "frame*.png"), *FAST, "-o", tmp_path / "o2"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o2" / "shot_run.json").read_text())
    assert report["frames"] == 11
    # the same frames in the same order: the same prediction
    np.testing.assert_array_equal(np.load(tmp_path / "o2" / "shot_pred.npy"), np.load(tmp_path / "o1" / "shot_pred.npy"))


def test_grey_alpha_and_16bit_image_sequences(tmp_path):
    """One sequence mixing 8-bit grey, 16-bit grey, RGBA, 16-bit RGBA, 16-bit RGB and
    grey + alpha PNGs: all come back as uint8 RGB with exact values. Grey: R = G = B; alpha:
    dropped, the colour kept as stored (also where alpha is 0), not composited; 16 bits:
    round(v * 255 / 65535)."""
    from PIL import Image

    from rollingdepth.io.video_io import load_source, open_source

    rng = np.random.default_rng(5)
    h, w = 6, 7
    u8 = lambda *shape: rng.integers(0, 256, (h, w, *shape), dtype=np.uint8)  # noqa: E731
    u16 = lambda *shape: rng.integers(0, 65536, (h, w, *shape), dtype=np.uint16)  # noqa: E731

    def to8(v):  # the 16-bit to 8-bit scaling, in float64
        return np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)

    grey8, grey16, rgba8, rgba16, rgb16, la = u8(), u16(), u8(4), u16(4), u16(3), u8(2)
    grey16.flat[:6] = [0, 128, 129, 257 * 100, 32768, 65535]  # to 0, 0, 1, 100, 128, 255
    rgba8[..., 3] = 0  # fully transparent: the colour is still what is stored
    rgba8[0, :, 3] = 255
    frames = {  # file -> (what to write, the RGB expected)
        "f1.png": (grey8, np.repeat(grey8[..., None], 3, 2)),
        "f2.png": (grey16, np.repeat(to8(grey16)[..., None], 3, 2)),
        "f3.png": (rgba8[..., [2, 1, 0, 3]], rgba8[..., :3]),  # cv2 writes BGRA
        "f10.png": (rgba16[..., [2, 1, 0, 3]], to8(rgba16[..., :3])),
        "f11.png": (rgb16[..., ::-1], to8(rgb16)),
        "f12.png": (None, np.repeat(la[..., :1], 3, 2)),  # grey + alpha, written by Pillow
    }
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, (data, _) in frames.items():
        if data is None:
            Image.fromarray(la, "LA").save(folder / name)
        else:
            assert cv2.imwrite(str(folder / name), data)
    assert cv2.imread(str(folder / "f12.png"), cv2.IMREAD_UNCHANGED).shape == (h, w, 4)  # as OpenCV reads LA
    assert cv2.imread(str(folder / "f2.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    (entry,) = open_source(folder)
    source = load_source(entry)
    assert source.size == (h, w) and source.frame_count == 6
    got = source.read()
    assert got.dtype == np.uint8 and got.shape == (6, h, w, 3)
    for i, (name, (_, want)) in enumerate(frames.items()):
        np.testing.assert_array_equal(got[i], want, err_msg=name)
    assert got[1, 0, :6, 0].tolist() == [0, 0, 1, 100, 128, 255]


def test_image_sequence_with_a_frame_of_another_size(tmp_path):
    from rollingdepth.io.video_io import InputError, load_source, open_source

    folder = tmp_path / "sizes"
    folder.mkdir()
    frames = make_clip(3, 24, 32)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"frame{i}.png"), f if i != 2 else cv2.resize(f, (30, 20)))
    with pytest.raises(InputError, match=r"sizes: frame2\.png is 30x20 pixels but frame0\.png is 32x24"):
        load_source(open_source(folder)[0])  # when it is opened, from the images' headers (tests/test_picture.py)


def test_truncated_video_warns_with_both_numbers(tmp_path):
    """A 30-frame clip cut at 70% and at 90%: every frame that decodes is one of the clip's,
    exactly, each once and in order (at 90% frames 21-23 are lost, B-frames whose data is cut
    away: ffmpeg's constant-rate output used to repeat frame 20 in their place), the source
    holds the decoded count and the container's, a warning names both; strict=True refuses
    the file in one line."""
    from rollingdepth.io.video_io import InputError, TruncatedVideoWarning, load_source

    whole = write_clip(tmp_path / "whole.mp4", make_clip(30, 24, 32, seed=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)
        intact = load_source(whole)
    assert intact.frame_count == intact.container_frames == 30 and intact.missing_frames == 0
    reference = intact.read()
    data = whole.read_bytes()
    for fraction in (0.7, 0.9):
        cut = tmp_path / f"cut{int(fraction * 100)}.mp4"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.warns(TruncatedVideoWarning) as caught:
            source = load_source(cut)
        assert source.container_frames == 30
        assert 0 < source.frame_count < 30 and source.missing_frames == 30 - source.frame_count
        (warning,) = [w for w in caught if issubclass(w.category, TruncatedVideoWarning)]
        text = str(warning.message)
        assert f"declares 30 frames but only {source.frame_count} decode" in text and "\n" not in text
        frames = source.read()
        assert len(frames) == source.frame_count
        matches = []
        for frame in frames:
            same = [i for i, r in enumerate(reference) if np.array_equal(frame, r)]
            assert same, "a decoded frame that is not one of the clip's"
            matches.append(same[0])
        assert all(a < b for a, b in zip(matches, matches[1:])), matches  # none repeated, in order
        with pytest.raises(InputError) as info:
            load_source(cut, strict=True)
        assert f"declares 30 frames but only {source.frame_count} decode" in str(info.value)
        assert "\n" not in str(info.value)


def test_truncated_video_warning_in_run_video(tmp_path, capsys):
    """run-video goes on with the frames that decode and says so in one warning line."""
    whole = write_clip(tmp_path / "whole.mp4", make_clip(30, 24, 32, seed=4))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    from rollingdepth.io.video_io import TruncatedVideoWarning, load_source

    with pytest.warns(TruncatedVideoWarning):
        decoded = load_source(cut).frame_count
    assert 0 < decoded < 30
    code, out, err = run([cut, *BASE, "-d", "1", "--frames", "3", "--no-save-sbs", "--cmap", "Greys_r", "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1 and f"declares 30 frames but only {decoded} decode" in warning[0], err
    assert np.load(tmp_path / "o" / "cut_pred.npy").shape[0] == 3
    report = json.loads((tmp_path / "o" / "cut_run.json").read_text())
    counts = {key: report["input_frames"][key] for key in ("decoded", "container")}
    assert counts == {"decoded": decoded, "container": 30}
    code, out, err = run([cut, *BASE, "-d", "1", "--frames", "3", "--strict", "-q", "-o", tmp_path / "strict"], capsys)
    assert code == 2
    error_line(err, f"declares 30 frames but only {decoded} decode")
    assert not list((tmp_path / "strict").glob("cut_*"))


def test_natural_sort():
    names = ["frame10.png", "frame2.png", "frame1.png"]
    assert sorted(names, key=natural_key) == ["frame1.png", "frame2.png", "frame10.png"]


def test_grayscale_and_rotated_video(tmp_path, capsys):
    """Grey video: R = G = B, the source's luma within codec tolerance. Rotation metadata of
    90 degrees (counter-clockwise display): the frames are np.rot90 of the source's."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    src = write_clip(tmp_path / "src.mp4", make_clip(4, 24, 40))
    gray = tmp_path / "gray.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-i", src, "-pix_fmt", "gray", "-c:v", "ffv1", gray], check=True)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-display_rotation", "90", "-i", src, "-c", "copy", rotated], check=True)
    source = decode(src).astype(int)
    grey = decode(gray).astype(int)
    assert grey.shape == source.shape
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    luma = source @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey[..., 0] - luma).mean() < 3
    turned = decode(rotated).astype(int)
    assert turned.shape == (4, 40, 24, 3)
    error = np.abs(turned - np.rot90(source, k=1, axes=(1, 2))).mean()
    assert error < 1.0
    assert np.abs(turned - np.rot90(source, k=-1, axes=(1, 2))).mean() > 10 * max(error, 1.0)  # not the other way
    code, _, err = run([gray, *FAST, "--res", "0", "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "o" / "gray_pred.npy").shape == (4, 24, 40)
    code, _, err = run([rotated, *FAST, "--res", "0", "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "differs" not in err and "Warning" not in err, err  # no frame-size notice from imageio
    assert np.load(tmp_path / "o" / "rotated_pred.npy").shape == (4, 40, 24)  # portrait after rotation
    assert_same_frames_in_order(sbs_inputs(tmp_path / "o" / "rotated_rgbd.mp4", 24), turned.astype(np.uint8))


# ----------------------------------------------------------------------------- bad input
def _bad_inputs(tmp_path, clips):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.mp4").write_text("this is not a video\n")
    good = (clips / "a.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "a_file").write_text("x")
    return [
        ([tmp_path / "missing.mp4", *FAST], "no such file"),
        ([tmp_path / "empty_dir", *FAST], "no videos"),
        ([tmp_path / "notes.mp4", *FAST], "not a readable video"),
        ([tmp_path / "truncated.mp4", *FAST], "not a readable video"),
        ([tmp_path / "zero.mp4", *FAST], "empty file"),
        ([clips / "a.mp4", *FAST, "--from", "50"], "beyond the end"),
        ([clips / "a.mp4", *FAST, "--snippet-lengths", "0"], "--snippet-lengths"),
        ([clips / "a.mp4", *BASE, "-d", "1,-1"], "--dilations"),
        ([clips / "a.mp4", *BASE, "-d", "2"], "--dilations"),
        ([clips / "a.mp4", *FAST, "-p", "turbo"], "--preset"),
        ([clips / "a.mp4", *FAST, "--cmap", "not_a_map"], "--cmap"),
        ([clips / "a.mp4", *FAST, "--dtype", "fp8"], "--dtype"),
        ([clips / "a.mp4", *FAST, "--res", "abc"], "--res"),
        ([clips / "a.mp4", *FAST, "--coalign", "slow"], "--coalign"),
        ([clips / "a.mp4", *FAST, "-o", tmp_path / "a_file" / "sub"], "--output-dir"),
        ([clips / "a.mp4", "-c", tmp_path / "nowhere"], "-c PATH"),
        ([clips / "a.mp4", "-c", "no-such-org/no-such-model"], "Hugging Face Hub"),
        ([clips / "a.mp4", "-c", tmp_path / "empty_dir"], "not a RollingDepth checkpoint"),
    ]


def test_bad_inputs_one_line_no_traceback_no_output(tmp_path, capsys, clips, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for args, message in _bad_inputs(tmp_path, clips):
        out_dir = tmp_path / "out"
        if "-o" not in args:
            args = [*args, "-o", out_dir]
        code, out, err = run(args, capsys)
        assert code not in (0, None), (args, out, err)
        error_line(err, message)
        assert "Traceback" not in out + err, err
        # the output folder this command created is gone again: nothing was written there
        assert not out_dir.exists(), (args, list(out_dir.iterdir()))


def test_verbose_shows_traceback(tmp_path, capsys):
    (tmp_path / "notes.mp4").write_text("not a video")
    code, out, err = run([tmp_path / "notes.mp4", *FAST, "-v", "-o", tmp_path / "o"], capsys)
    assert code == 2 and "Traceback" in err


def test_zero_frame_video(tmp_path, capsys):
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    src = write_clip(tmp_path / "src.mp4", make_clip(3, 24, 32))
    empty = tmp_path / "noframes.mp4"
    # keep the container and stream, drop every frame
    subprocess.run([ffmpeg, "-v", "error", "-i", src, "-frames:v", "0", "-c", "copy", empty], check=True)
    code, out, err = run([empty, *FAST, "-o", tmp_path / "o"], capsys)
    assert code == 2  # found before the model loads, as other input errors
    error_line(err, "no frames")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- batches
def test_batch_with_a_corrupt_file(tmp_path, capsys, clips):
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes((clips / name).read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00" * 1000)
    code, out, err = run([folder, *FAST, "-o", tmp_path / "o"], capsys)
    assert code == 1
    assert (tmp_path / "o" / "a_run.json").exists() and (tmp_path / "o" / "b_run.json").exists()
    assert not list((tmp_path / "o").glob("broken*"))
    summary = " ".join(out.split())
    assert "broken.mp4" in summary and "not a readable video" in summary


def test_skip_existing_resumes(tmp_path, capsys, clips):
    code, _, err = run([clips, *FAST, "-o", tmp_path], capsys)
    assert code == 0, err
    stamp = (tmp_path / "a_pred.npy").stat().st_mtime_ns
    (tmp_path / "b_run.json").unlink()  # b was interrupted before its report
    code, out, err = run([clips, *FAST, "-o", tmp_path, "--skip-existing"], capsys)
    assert code == 0, err
    assert (tmp_path / "a_pred.npy").stat().st_mtime_ns == stamp
    assert "skipped" in out
    assert (tmp_path / "b_run.json").exists()


def test_skip_existing_compares_the_recorded_settings(tmp_path, capsys, clips):
    """The same settings skip; other settings predict the video again, replace its outputs and
    say in one line which settings differed; the model is not loaded when every video skips."""
    clip = clips / "a.mp4"
    code, _, err = run([clip, *FAST, "-o", tmp_path], capsys)
    assert code == 0, err
    stamp = (tmp_path / "a_pred.npy").stat().st_mtime_ns
    code, out, err = run([clip, *FAST, "-o", tmp_path, "--skip-existing", "--progress", "lines"], capsys)
    assert code == 0, err
    assert (tmp_path / "a_pred.npy").stat().st_mtime_ns == stamp and "skipped" in out
    assert "loading checkpoint" not in err and "other settings" not in err

    other = ["-c", TINY_CHECKPOINT, "--res", "24", "--dtype", "fp32", "-d", "1,4"]
    code, out, err = run([clip, *other, "-o", tmp_path, "--skip-existing", "--progress", "lines"], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "other settings" in line]
    assert len(notes) == 1 and "--res 32 (now 24)" in notes[0], err
    assert "--dilations" not in notes[0] and "skipped" not in out
    report = json.loads((tmp_path / "a_run.json").read_text())
    assert report["settings"]["processing_res"] == 24 and np.load(tmp_path / "a_pred.npy").shape[1:] == (18, 24)
    # and now those settings are the recorded ones: skipped
    code, out, err = run([clip, *other, "-o", tmp_path, "--skip-existing"], capsys)
    assert code == 0 and "skipped" in out and "other settings" not in err, err

    # a video of three shots: its report's plan is its first shot's (capped there), and it skips too
    from .shot_clips import three_scenes

    shots = write_clip(tmp_path / "shots.mp4", three_scenes()[0])
    args = [shots, *BASE, "-d", "1,10", "--shots", "auto", "-o", tmp_path / "s"]
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "shots_run.json").read_text())["settings"]["units"] == 3
    code, out, err = run([*args, "--skip-existing"], capsys)
    assert code == 0 and "skipped" in out and "other settings" not in err, err
    code, out, err = run([shots, *BASE, "-d", "1,2", "--shots", "auto", "-o", tmp_path / "s", "--skip-existing",
                          "--progress", "lines"], capsys)
    assert code == 0 and "skipped" not in out and "--dilations" in err, err


def test_inputs_are_probed_before_the_model_loads(tmp_path, capsys, clips, monkeypatch):
    """A text file named .mp4 and a zero-byte .mp4: each said in one line, exit 2, no model
    loaded and no summary when every input is bad; beside a good one, said first and the
    good one runs."""
    from rollingdepth.runtime import loading

    loads = []
    real = loading.load_pipeline
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.mp4").write_text("this is a text file, not a video\n")
    (folder / "zero.mp4").write_bytes(b"")
    code, out, err = run([folder, *FAST, "-o", tmp_path / "o"], capsys)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2 and "notes.mp4: not a readable video" in errors[0] and "zero.mp4: empty file" in errors[1], err
    assert not loads and "summary" not in out + err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # created for the run, removed again: nothing was written

    (folder / "a.mp4").write_bytes((clips / "a.mp4").read_bytes())
    code, out, err = run([folder, *FAST, "-o", tmp_path / "o", "--progress", "lines"], capsys)
    assert code == 1, err
    lines = err.splitlines()
    first_error = min(i for i, line in enumerate(lines) if line.startswith("Error:"))
    loading_at = lines.index(f"loading checkpoint {TINY_CHECKPOINT}")
    assert first_error < loading_at and len(loads) == 1, err  # the bad ones come first
    assert (tmp_path / "o" / "a_run.json").exists() and not list((tmp_path / "o").glob("notes*"))
    summary = " ".join(out.split())
    assert "notes.mp4" in summary and "empty file" in summary


def test_a_cut_list_that_does_not_fit_is_said_before_the_model_loads(tmp_path, capsys, clips, monkeypatch):
    """``--shots FILE`` is read against each input (its frame count, its fps for timecodes) as
    the inputs are probed: a list that does not fit is said in one line naming the file and
    line, before the model loads; an input it fits runs with it."""
    from rollingdepth.runtime import loading

    loads = []
    real = loading.load_pipeline
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    cuts = tmp_path / "cuts.txt"
    for text, message in [("3\nabc\n", "cuts.txt, line 2: cannot read 'abc'"),
                          ("3\n00:00:01:00\n", "cuts.txt, line 2: frame 12 is past the video's last frame 4")]:
        cuts.write_text(text)
        code, out, err = run([clips / "b.mp4", *FAST, "--shots", cuts, "-o", tmp_path / "o"], capsys)
        assert code == 2, err
        error_line(err, message)
        assert not loads and "summary" not in out + err and "Traceback" not in err
        assert not (tmp_path / "o").exists()

    cuts.write_text("3\n6\n")  # fits a.mp4 (7 frames), not b.mp4 (5 frames)
    code, out, err = run([clips, *FAST, "--shots", cuts, "-o", tmp_path / "o", "--progress", "lines"], capsys)
    assert code == 1, err
    lines = err.splitlines()
    [bad] = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    assert "b.mp4: cut list" in lines[bad] and "line 2: frame 6 is past the video's last frame 4" in lines[bad]
    assert bad < lines.index(f"loading checkpoint {TINY_CHECKPOINT}") and len(loads) == 1, err
    report = json.loads((tmp_path / "o" / "a_run.json").read_text())
    assert [(s["first"], s["found_by"]) for s in report["shots"]] == [(0, "start"), (3, "cut list"), (6, "cut list")]
    assert not list((tmp_path / "o").glob("b_*"))


def test_interrupt_leaves_no_partial_file(tmp_path, capsys, clips, monkeypatch):
    from rollingdepth.io import video_io

    calls = {"n": 0}
    original = video_io.VideoWriter.write

    def interrupt_midway(self, frame):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, frame)

    monkeypatch.setattr(video_io.VideoWriter, "write", interrupt_midway)
    code, out, err = run([clips / "a.mp4", *FAST, "-o", tmp_path], capsys)
    assert code == 130
    assert not (tmp_path / "a_Spectral_r.mp4").exists() and not (tmp_path / "a_run.json").exists()
    assert_no_partial_files(tmp_path)


@pytest.mark.parametrize("stage,event", [("inference", {"stage": "snippets", "dilation": 1, "done": 4}),
                                         ("writing", {"stage": "write", "phase": "progress"})])
def test_ctrl_c_in_a_real_process(tmp_path, stage, event):
    """A real SIGINT to the process group of run-video (what Ctrl-C in a terminal sends), while
    the run is held at a point it reports (tests/conftest.py: held_run): after its first UNet
    batch (inference), or after the first frame of its outputs went to the temporary files
    (writing; the writer thread goes on only once the run has cancelled it). Exit code 130,
    no output file, nothing partial; only the work folder stays, with its journal, for the
    run to resume."""
    import os
    import signal

    clip = write_clip(tmp_path / "clip.mp4", make_clip(8, 24, 32))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    proc = held_run([clip, *FAST, "--unet-batch-size", "4", "--save-png16", "-o", out], event, cwd=REPO, env=env)
    assert work_folders(out) and not (out / "clip_run.json").exists()
    partial = [p.name for p in out.glob("*partial*")]
    assert bool(partial) == (stage == "writing"), partial  # held while the temporary files are written
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=120)
    proc.drain.join(30)
    err = "".join(proc.seen)
    assert code == 130, err[-3000:]
    assert "Interrupted" in err and "Traceback" not in err, err[-3000:]
    assert sorted(p.name for p in out.iterdir() if ".rollingdepth-work-" not in p.name) == []
    assert all((p / "journal.jsonl").exists() for p in work_folders(out))
    assert not [p for p in out.rglob("*partial*")], "left behind"


def test_outputs_are_written_while_the_next_video_is_predicted(tmp_path, capsys, clips, monkeypatch):
    """a's outputs are written in the background: its writing waits here until b's prediction
    has started, which can only happen if the two overlap."""
    import threading

    from rollingdepth.runtime import video_job as runner

    b_started = threading.Event()
    overlapped = []
    predict, write = runner.predict_video, runner.PendingOutputs.write

    def spy_predict(pipe, source, *a, **k):
        if source.stem == "b":
            b_started.set()
        return predict(pipe, source, *a, **k)

    def spy_write(self, progress, cancel=None):
        if self.name.endswith("a.mp4"):
            overlapped.append(b_started.wait(60))
        return write(self, progress, cancel)

    monkeypatch.setattr(runner, "predict_video", spy_predict)
    monkeypatch.setattr(runner.PendingOutputs, "write", spy_write)
    code, out, err = run([clips, *FAST, "-o", tmp_path], capsys)
    assert code == 0, err
    assert overlapped == [True]
    for stem in ("a", "b"):
        assert json.loads((tmp_path / f"{stem}_run.json").read_text())["frames"] > 0
        assert np.load(tmp_path / f"{stem}_pred.npy").shape[0] == {"a": 7, "b": 5}[stem]


def test_a_failed_background_write_fails_only_its_video(tmp_path, capsys, clips, monkeypatch):
    from rollingdepth.io import video_io

    original = video_io.VideoWriter.write

    def disk_full_for_a(self, frame):
        if "/a_" in str(self._path) or "/.a_" in str(self._path):
            raise OSError("No space left on device")
        return original(self, frame)

    original_init = video_io.VideoWriter.__init__

    def remember_path(self, path, *a, **k):
        self._path = path
        original_init(self, path, *a, **k)

    monkeypatch.setattr(video_io.VideoWriter, "__init__", remember_path)
    monkeypatch.setattr(video_io.VideoWriter, "write", disk_full_for_a)
    code, out, err = run([clips, *FAST, "-o", tmp_path], capsys)
    assert code == 1
    error_line(err, "No space left on device")
    assert not list(tmp_path.glob("a_*")) and (tmp_path / "b_run.json").exists()
    assert_no_partial_files(tmp_path)
    # a's work folder stays, with its journal, so that running again only writes a's outputs
    assert all((p / "journal.jsonl").exists() for p in tmp_path.iterdir() if ".rollingdepth-work-" in p.name)


def test_interrupt_while_a_video_is_written_in_the_background(tmp_path, capsys, clips, monkeypatch):
    """Ctrl-C during b's prediction while a is being written: a's writing stops too and
    leaves nothing partial; exit 130. a's writing waits after its first frame until the run
    cancels it (no race between its writing and the interrupt)."""
    import threading

    from rollingdepth.runtime import video_job as runner

    writing = threading.Event()
    released = []
    write, predict = runner.PendingOutputs.write, runner.predict_video

    def held_after_one_frame(self, progress, cancel=None):
        def report(stage, done, total):
            progress(stage, done, total)
            if 0 < done < total and not released:
                writing.set()
                released.append(cancel.wait(60))  # held until the run cancels a's writing

        return write(self, report, cancel)

    def interrupt_b(pipe, source, *a, **k):
        if source.stem == "b":
            assert writing.wait(60)
            raise KeyboardInterrupt
        return predict(pipe, source, *a, **k)

    monkeypatch.setattr(runner.PendingOutputs, "write", held_after_one_frame)
    monkeypatch.setattr(runner, "predict_video", interrupt_b)
    code, out, err = run([clips, *FAST, "-o", tmp_path], capsys)
    assert code == 130 and released == [True]
    assert not (tmp_path / "a_run.json").exists() and not list(tmp_path.glob("b_*"))
    assert_no_partial_files(tmp_path)
    # a's work folder stays, with its journal, so that running again only writes a's outputs
    assert all((p / "journal.jsonl").exists() for p in tmp_path.iterdir() if ".rollingdepth-work-" in p.name)


def test_quiet_prints_only_errors(tmp_path, capsys, clips):
    code, out, err = run([clips / "b.mp4", *FAST, "-q", "-o", tmp_path], capsys)
    assert code == 0 and out == "" and err == ""


# ----------------------------------------------------------------------------- entry points
@pytest.mark.parametrize("argv", [["-m", "rollingdepth"], [str(REPO / "scripts" / "run_video.py")]])
def test_entry_points(argv):
    proc = subprocess.run([sys.executable, *argv, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("rollingdepth ")
    proc = subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--snippet-lengths" in proc.stdout


def test_batch_script(tmp_path, clips):
    env = {**__import__("os").environ, "OUT": str(tmp_path / "out"), "CHECKPOINT": str(TINY_CHECKPOINT),
           "ARGS": "--res 32 --dtype fp32 -d 1,2 -q", "PATH": f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "batch_run.sh"), str(clips)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out" / clips.name).glob("*_run.json")) == ["a_run.json", "b_run.json"]


@pytest.mark.parametrize("name,codec", [("clip.mov", "libx265"), ("clip.webm", "libvpx-vp9"), ("clip.avi", "mjpeg"), ("clip.mkv", "libx264")])
def test_containers_and_codecs_decode(tmp_path, name, codec):
    """The bundled ffmpeg reads HEVC, VP9 and MJPEG in mov, webm, avi and mkv; alpha becomes RGB."""
    from rollingdepth.io.video_io import load_source

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    src = write_clip(tmp_path / "src.mp4", make_clip(5, 24, 32))
    extra = ["-pix_fmt", "yuva420p"] if codec == "libvpx-vp9" else []  # VP9 with an alpha channel
    subprocess.run([ffmpeg, "-v", "error", "-i", src, "-c:v", codec, *extra, tmp_path / name], check=True)
    source = load_source(tmp_path / name)
    frames = source.read()
    assert frames.shape == (5, 24, 32, 3) and frames.dtype == np.uint8
    assert source.frame_count == 5 and source.fps == 12.0
    assert np.abs(frames.astype(int) - make_clip(5, 24, 32).astype(int)).mean() < 20  # the same picture


# ----------------------------------------------------------------------------- the original's command line
def test_original_argv_becomes_this_commands_forms(tmp_path):
    import typer.main

    from rollingdepth.frontends.original_cli import original_argv

    o = lambda args: original_argv(args, typer.main.get_command(cli.app))  # noqa: E731
    assert o(["-d", "1", "10", "clip.mp4"]) == ["-d", "1", "-d", "10", "clip.mp4"]  # clip.mp4 stays INPUT
    assert o(["--snippet-lengths", "3", "3", "3", "-i", "v.mp4"]) == ["--snippet-lengths", "3"] * 3 + ["-i", "v.mp4"]
    assert o(["--snip-len", "auto", "v.mp4"]) == ["--snip-len", "auto", "v.mp4"]
    (tmp_path / "viridis").mkdir()  # an existing path is INPUT, never a colour map
    assert o(["--cmap", "Spectral_r", "Greys_r", str(tmp_path / "viridis")]) == \
        ["--cmap", "Spectral_r", "--cmap", "Greys_r", str(tmp_path / "viridis")]
    assert o(["--save-sbs", "false", "--restore-res", "true", "--cap-dilation", "False", "--unload-snippet", "1",
              "--save-npy", "--save-snippets=no"]) == \
        ["--no-save-sbs", "--restore-res", "--no-cap-dilation", "--unload-snippet", "--save-npy", "--no-save-snippets"]
    assert o(["--save-ply", "clip.mp4"]) == ["--save-ply", "1", "clip.mp4"]
    assert o(["--save-ply", "5", "--depth-range", "0.5", "20"]) == ["--save-ply", "5", "--depth-range", "0.5", "--depth-range", "20"]
    assert o(["-o", "true", "-c", "1", "x.mp4"]) == ["-o", "true", "-c", "1", "x.mp4"]  # values of other options untouched
    with pytest.raises(ValueError, match="--save-sbs"):
        o(["--save-sbs=maybe"])


def test_original_readme_commands(tmp_path, capsys):
    """The original README's commands (python run_video.py -i ... -o ... -p fast --verbose, and
    its space-separated and true/false options) run unchanged; only the tiny checkpoint, a small
    --res and fp32 are added, in the original's own options."""
    folder = tmp_path / "samples"
    folder.mkdir()
    write_clip(folder / "clip.mp4", make_clip(8, 24, 32, seed=4))
    tiny = ["-c", str(TINY_CHECKPOINT), "--res", "32", "--dtype", "fp32"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "run_video.py"), "-i", str(folder), "-o",
                           str(tmp_path / "samples_fast"), "-p", "fast", "--verbose", *tiny],
                          capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "samples_fast").iterdir()) == [
        "clip_Greys_r.mp4", "clip_Spectral_r.mp4", "clip_pred.npy", "clip_rgbd.mp4", "clip_run.json"]
    assert np.load(tmp_path / "samples_fast" / "clip_pred.npy").shape == (8, 24, 32)

    out = tmp_path / "variants"
    code, _, err = run(["-i", folder / "clip.mp4", "-o", out, "-p", "fast", "-d", "1", "10", "25", "--snippet-lengths",
                        "3", "3", "3", "--refine-step", "1", "--max-vae-bs", "1", "--unload-snippet", "true",
                        "--save-sbs", "false", "--save-npy", "true", "--save-snippets", "true", "--cap-dilation", "true",
                        "--restore-res", "false", "--cmap", "Spectral_r", "Greys_r", "--from", "1", "--frames", "6",
                        "--seed", "3", *tiny], capsys)
    assert code == 0, err
    report = json.loads((out / "clip_run.json").read_text())
    s = report["settings"]
    assert report["frames"] == 6 and s["seed"] == 3 and s["max_vae_bs"] == 1 and s["refine_step"] == 1
    assert len(s["snippet_lengths"]) == len(s["dilations"]) and set(s["snippet_lengths"]) == {3}
    assert s["cmaps"] == ["Spectral_r", "Greys_r"] and s["save_sbs"] is False and s["restore_res"] is False
    assert (out / "clip_snippets.npz").exists() and not (out / "clip_rgbd.mp4").exists()
    assert np.load(out / "clip_pred.npy").shape == (6, 24, 32)


def test_every_method_setting_is_an_option_of_run_video():
    """The method's settings are declared once (MethodSettings, with their option names);
    RunConfig holds them and run-video offers each under that name."""
    import dataclasses

    import typer.main

    from rollingdepth.runtime.run_config import RunConfig
    from rollingdepth.method.settings import MethodSettings, method_fields

    command = typer.main.get_command(cli.app)
    options = {name for p in command.params for name in (*p.opts, *getattr(p, "secondary_opts", []))}
    for field_name, option in method_fields().items():
        assert option in options, (field_name, option)
    run_fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for f in dataclasses.fields(MethodSettings):
        assert run_fields[f.name].metadata == f.metadata  # the same declaration, not a copy


def test_the_long_edge_is_the_resolution_and_too_thin_frames_are_said(tmp_path, capsys):
    """1919 x 1079 at --res 64 is 64 wide (the reference's float factor gave 63); 4000 x 200 at
    --res 64 would be 3 pixels high: one line naming --res and the least that works, no output
    folder; that --res then runs."""
    import cv2

    from rollingdepth import RollingDepthPipeline

    assert RollingDepthPipeline.processing_size(1079, 1919, 64) == (35, 64)
    assert RollingDepthPipeline.processing_size(1919, 1079, 64) == (64, 35)
    frames = tmp_path / "wide"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), rng.integers(0, 255, (200, 4000, 3), dtype=np.uint8))
    code, out, err = run([frames, "-c", TINY_CHECKPOINT, "--dtype", "fp32", "--res", "64", "-o", tmp_path / "o"], capsys)
    assert code != 0 and "Traceback" not in err
    line = error_line(err, "--res 64 makes the 4000x200 frames 64x3 pixels")
    assert "give --res 120 or more" in line and not (tmp_path / "o").exists()
    code, _, err = run([frames, "-c", TINY_CHECKPOINT, "--dtype", "fp32", "--res", "120", "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "o" / "wide_pred.npy").shape == (3, 6, 120)
