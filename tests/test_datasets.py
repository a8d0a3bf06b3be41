"""Dataset readers: tiny synthetic sequences in each benchmark's exact on-disk format read back exactly."""

import ast
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from rollingdepth.evaluation.datasets import (
    DATASETS,
    PUBLISHED,
    published,
    SPLIT_DIR,
    bundled_splits,
    load_sequences,
    read_dpt,
    read_png16,
    read_sintel_cam,
)
from rollingdepth.evaluation.metrics import valid_mask
from rollingdepth.io.video_io import InputError

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- writers (the formats)
def depth_map(h: int, w: int, seed: int = 0, lo: float = 0.5, hi: float = 8.0) -> np.ndarray:
    """Smooth depth in metres with a patch of missing values (0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    d = lo + (hi - lo) * (0.5 + 0.5 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0))
    d = d * rng.uniform(0.95, 1.05)
    d[: h // 4, : w // 4] = 0.0
    return d


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 90 * np.sin(xx[..., None] / 6.0 + seed + np.arange(3)) * np.cos(yy[..., None] / 5.0)
    return np.clip(base, 0, 255).astype(np.uint8)


def write_png16(path: Path, depth_m: np.ndarray, scale: float) -> np.ndarray:
    """Store ``depth_m * scale`` as a 16-bit PNG; returns the stored integers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.round(depth_m * scale).astype(np.uint16)
    assert cv2.imwrite(str(path), values)
    return values


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_dpt(path: Path, depth: np.ndarray) -> None:
    """Sintel .dpt: float32 tag, int32 width, int32 height, float32 rows (little-endian)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = depth.shape
    path.write_bytes(np.array([202021.25], "<f4").tobytes() + np.array([w, h], "<i4").tobytes()
                     + depth.astype("<f4").tobytes())


def write_cam(path: Path, k: np.ndarray, w2c: np.ndarray) -> None:
    """Sintel .cam: float32 tag, float64 intrinsics (3x3) and world-to-camera (3x4)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.array([202021.25], "<f4").tobytes() + k.astype("<f8").tobytes()
                     + w2c[:3].astype("<f8").tobytes())


def write_split(folder: Path, name: str, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text("rgb,depth\n" + "".join(f"{r},{d}\n" for r, d in rows))


def make_bonn(root: Path, split: Path, names=("rgbd_bonn_balloon2", "rgbd_bonn_crowd2"), frames=3, h=24, w=32):
    """Bonn RGB-D: SEQ/rgb/TIME.png and SEQ/depth/TIME.png (depth x 5000); returns the depths."""
    truth = {}
    for s, name in enumerate(names):
        rows, depths = [], []
        for i in range(frames):
            stamp = f"{1548266531 + i}.{51903 + 7 * i}"
            write_rgb(root / name / "rgb" / f"{stamp}.png", rgb_image(h, w, s * 10 + i))
            depths.append(write_png16(root / name / "depth" / f"{stamp}.png", depth_map(h, w, s * 10 + i), 5000) / 5000)
            rows.append((f"rgb/{stamp}.png", f"depth/{stamp}.png"))
        write_split(split, name, rows)
        truth[name] = np.stack(depths)
    return truth


def make_scannet(root: Path, split: Path, names=("scene0707_00",), frames=3, h=480, w=640, color_size=None):
    """ScanNet (SensReader export): color/ID.jpg, depth/ID.png (mm), pose/ID.txt, intrinsic/intrinsic_depth.txt."""
    truth = {}
    for s, name in enumerate(names):
        d = root / name
        k = np.array([[0.9 * w, 0, w / 2, 0], [0, 0.9 * w, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        (d / "intrinsic").mkdir(parents=True)
        np.savetxt(d / "intrinsic" / "intrinsic_depth.txt", k)
        rows, depths, poses = [], [], []
        for j in range(frames):
            i = 3 * j
            ch, cw = color_size or (h, w)
            write_rgb(d / "color" / f"{i}.jpg", rgb_image(ch, cw, s * 10 + j))
            depths.append(write_png16(d / "depth" / f"{i}.png", depth_map(h, w, s * 10 + j), 1000) / 1000)
            pose = np.eye(4)
            pose[:3, 3] = [0.05 * j, -0.01 * j, 0.02 * j]
            (d / "pose").mkdir(exist_ok=True)
            np.savetxt(d / "pose" / f"{i}.txt", pose)
            poses.append(pose)
            rows.append((f"color/{i}.jpg", f"depth/{i}.png"))
        write_split(split, name, rows)
        truth[name] = (np.stack(depths), k[:3, :3], np.stack(poses))
    return truth


# ----------------------------------------------------------------------------- readers
def test_bonn_reads_back_exactly(tmp_path):
    truth = make_bonn(tmp_path / "bonn", tmp_path / "split")
    seqs = load_sequences("bonn", tmp_path / "bonn", str(tmp_path / "split"))
    assert [s.name for s in seqs] == ["rgbd_bonn_balloon2", "rgbd_bonn_crowd2"]
    depth = seqs[0].read_depth()
    np.testing.assert_array_equal(depth, truth["rgbd_bonn_balloon2"])  # value / 5000, exactly
    assert (depth[:, :6, :8] == 0).all()  # missing depth stays 0 ...
    assert not valid_mask(depth, 1e-3, 10.0)[:, :6, :8].any()  # ... and is invalid
    rgb = seqs[1].read_rgb()
    assert rgb.shape == (3, 24, 32, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[2], rgb_image(24, 32, 12))  # PNG: lossless, RGB order
    assert seqs[0].read_cameras() is None and seqs[0].read_mask() is None


def test_bundled_paper_splits_point_into_the_published_layouts(tmp_path):
    expected = {  # dataset: (split, sequences, frames, first sequence folder, its first rgb and depth)
        "bonn": ("5_seq_110frame", 5, 110, "rgbd_bonn_balloon2",
                 "rgb/1548266531.51903.png", "depth/1548266531.50882.png"),
        "scannet": ("rgbd_test_90frame_crop", 100, 90, "scene0707_00", "color/0.jpg", "depth/0.png"),
        "pointodyssey": ("selected_250frame_masked", 35, 250, "test/cab_e_3rd",
                         "rgbs/rgb_00240.jpg", "depths_masked/depth_00240.png"),
        "dydtof": ("extracted_200frame_sub16", 16, 200, "apartment_big/ba_shot1",
                   "ColorImage/shot1.0050.jpeg", "DepthMap/shot1.0050.npy"),
    }
    for name, (split, count, frames, first, rgb, depth) in expected.items():
        assert DATASETS[name].default_split == split
        assert split in bundled_splits(name)
        root = tmp_path / name
        (root / first).mkdir(parents=True)  # one sequence present is enough to list the split
        seqs = load_sequences(name, root)
        assert len(seqs) == count and all(len(s) == frames for s in seqs), name
        assert seqs[0].folder == root / first
        assert seqs[0].rgb[0] == root / first / rgb and seqs[0].depth[0] == root / first / depth
    assert "Apache License" in (SPLIT_DIR / "LICENSE.txt").read_text()
    assert "Apache License 2.0" in (SPLIT_DIR / "README.md").read_text()
    # the split lists ship with the package
    line = re.search(r"^rollingdepth = (\[.*\])$", (REPO / "pyproject.toml").read_text(), re.M).group(1)
    patterns = ast.literal_eval(line)  # [tool.setuptools.package-data]
    shipped = {p for pattern in patterns for p in (REPO / "rollingdepth").glob(pattern)}
    assert set(SPLIT_DIR.rglob("*.csv")) <= shipped and SPLIT_DIR / "LICENSE.txt" in shipped


def test_scannet_crop_resize_and_cameras(tmp_path):
    truth = make_scannet(tmp_path / "scannet", tmp_path / "split", frames=2, color_size=(968, 1296))
    seq = load_sequences("scannet", tmp_path / "scannet", str(tmp_path / "split"))[0]
    depth, k, poses = truth["scene0707_00"]
    np.testing.assert_array_equal(seq.read_depth(), depth[:, 8:-8, 11:-11])  # mm / 1000, DepthCrafter's crop
    assert seq.read_rgb().shape == (2, 464, 618, 3)  # colour resized to the depth's 640x480, then cropped
    assert seq.needs_preparing()
    k_read, poses_read = seq.read_cameras()
    np.testing.assert_array_equal(poses_read, poses)
    np.testing.assert_allclose(k_read[0], k - np.array([[0, 0, 11], [0, 0, 8], [0, 0, 0]]))


def test_pointodyssey_scale_nested_names_and_masks(tmp_path):
    root, split = tmp_path / "po", tmp_path / "split"
    d = depth_map(20, 30, 3, hi=40.0)
    stored = write_png16(root / "test" / "seq_a" / "depths_masked" / "depth_00007.png", d, 65535 / 1000)
    write_rgb(root / "test" / "seq_a" / "rgbs" / "rgb_00007.jpg", rgb_image(20, 30))
    mask = np.zeros((20, 30), np.uint8)
    mask[5:, 5:] = 255
    cv2.imwrite(str(root / "test" / "seq_a" / "valid.png"), mask)
    split.mkdir()
    (split / "test^seq_a.csv").write_text("rgb,depth,mask\nrgbs/rgb_00007.jpg,depths_masked/depth_00007.png,valid.png\n")
    seq = load_sequences("pointodyssey", root, str(split))[0]
    assert seq.name == "test^seq_a" and seq.folder == root / "test" / "seq_a"
    np.testing.assert_allclose(seq.read_depth()[0], stored * 1000.0 / 65535.0, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(seq.read_mask()[0], mask > 0)
    assert not seq.needs_preparing()


def test_dydtof_npy_depth(tmp_path):
    root, split = tmp_path / "dydtof", tmp_path / "split"
    d = depth_map(16, 24, 4).astype(np.float32)
    d[3, 3] = np.nan
    seq_dir = root / "cabin" / "cabin_shot1"
    (seq_dir / "DepthMap").mkdir(parents=True)
    np.save(seq_dir / "DepthMap" / "shot1.0050.npy", d)
    write_rgb(seq_dir / "ColorImage" / "shot1.0050.jpeg", rgb_image(16, 24))
    write_split(split, "cabin^cabin_shot1", [("ColorImage/shot1.0050.jpeg", "DepthMap/shot1.0050.npy")])
    seq = load_sequences("dydtof", root, str(split))[0]
    read = seq.read_depth()[0]
    np.testing.assert_array_equal(read[np.isfinite(read)], d[np.isfinite(d)].astype(np.float64))
    assert not valid_mask(read[None], 1e-3, 10.0)[0, 3, 3]


def test_sintel_dpt_and_cam(tmp_path):
    root = tmp_path / "sintel" / "training"
    rng = np.random.default_rng(0)
    k = np.array([[1120.0, 0, 511.5], [0, 1120.0, 217.5], [0, 0, 1]])
    depths, poses = [], []
    for i in (1, 2):
        d = rng.uniform(0.5, 90.0, (12, 20)).astype(np.float32)
        write_dpt(root / "depth" / "alley_1" / f"frame_{i:04d}.dpt", d)
        w2c = np.eye(4)
        w2c[:3, 3] = [0.1 * i, 0.0, -0.2 * i]
        write_cam(root / "camdata_left" / "alley_1" / f"frame_{i:04d}.cam", k, w2c)
        write_rgb(root / "clean" / "alley_1" / f"frame_{i:04d}.png", rgb_image(12, 20, i))
        depths.append(d)
        poses.append(np.linalg.inv(w2c))
    np.testing.assert_array_equal(read_dpt(root / "depth" / "alley_1" / "frame_0001.dpt"), depths[0])
    k_read, c2w = read_sintel_cam(root / "camdata_left" / "alley_1" / "frame_0002.cam")
    np.testing.assert_array_equal(k_read, k)
    np.testing.assert_allclose(c2w, poses[1])
    seqs = load_sequences("sintel", tmp_path / "sintel")  # the training/ folder is found below ROOT
    assert [s.name for s in seqs] == ["alley_1"] and len(seqs[0]) == 2
    np.testing.assert_array_equal(seqs[0].read_depth(), np.stack(depths).astype(np.float64))
    k_seq, c2w_seq = seqs[0].read_cameras()
    assert k_seq.shape == (2, 3, 3) and np.allclose(c2w_seq, np.stack(poses))
    (root / "depth" / "alley_1" / "frame_0001.dpt").write_bytes(b"\x00" * 40)
    with pytest.raises(InputError, match="not a Sintel .dpt"):
        read_dpt(root / "depth" / "alley_1" / "frame_0001.dpt")


def test_kitti_png256_even_crop_and_window(tmp_path):
    root = tmp_path / "kitti"
    drive = "2011_09_26_drive_0002_sync"
    depths = []
    for i in range(112):
        d = depth_map(11, 16, i, hi=85.0)
        depths.append(write_png16(root / "val" / drive / "proj_depth" / "groundtruth" / "image_02" / f"{i:010d}.png",
                                  d, 256) / 256)
        write_rgb(root / drive[:10] / drive / "image_02" / "data" / f"{i:010d}.png", rgb_image(11, 16, i))
    seq = load_sequences("kitti", root)[0]
    assert seq.name == drive and len(seq) == 110  # the first 110 frames, as DepthCrafter and VDA evaluate
    depth = seq.read_depth()
    assert depth.shape == (110, 10, 16)  # cropped to an even height
    np.testing.assert_array_equal(depth, np.stack(depths[:110])[:, :10])
    assert (depth == 0).any() and not valid_mask(depth, 1e-3, 80.0)[depth == 0].any()
    assert len(load_sequences("kitti", root, "val_500")[0]) == 112


def test_nyuv2_as_video_depth_anything_extracts_it(tmp_path):
    root = tmp_path / "nyu"
    d = depth_map(480, 640, 5)
    stored = write_png16(root / "kitchen_0003" / "depth" / "0.png", d, 6000)
    write_rgb(root / "kitchen_0003" / "rgb" / "0.jpg", rgb_image(480, 640))
    seq = load_sequences("nyuv2", root)[0]
    np.testing.assert_array_equal(seq.read_depth()[0], (stored / 6000)[45:471, 41:601])  # value / 6000, Eigen crop
    assert seq.read_rgb().shape == (1, 426, 560, 3)


def test_bad_options_and_files_say_what_is_wrong(tmp_path):
    make_bonn(tmp_path / "bonn", tmp_path / "split", names=("rgbd_bonn_balloon2",), frames=1)
    with pytest.raises(ValueError, match="--dataset: unknown dataset 'tum'"):
        load_sequences("tum", tmp_path)
    with pytest.raises(ValueError, match="--root .*: no such folder"):
        load_sequences("bonn", tmp_path / "missing")
    with pytest.raises(ValueError, match="--root .*none of the 5 sequences"):
        load_sequences("bonn", tmp_path / "split")
    with pytest.raises(ValueError, match="--split: unknown split 'test'.*5_seq_110frame"):
        load_sequences("bonn", tmp_path / "bonn", "test")
    (tmp_path / "badsplit").mkdir()
    (tmp_path / "badsplit" / "x.csv").write_text("image,gt\na,b\n")
    with pytest.raises(ValueError, match="--split .*rgb,depth"):
        load_sequences("bonn", tmp_path / "bonn", str(tmp_path / "badsplit"))
    with pytest.raises(ValueError, match="--root .*no KITTI sequence"):
        load_sequences("kitti", tmp_path)
    eight_bit = tmp_path / "d8.png"
    cv2.imwrite(str(eight_bit), np.full((4, 4), 7, np.uint8))
    with pytest.raises(InputError, match="16-bit"):
        read_png16(eight_bit, 5000)
    with pytest.raises(InputError, match="no such file"):
        read_png16(tmp_path / "none.png", 5000)


def test_published_numbers_are_the_papers():
    # Ke et al., CVPR 2025, Table 1: AbsRel / delta1 in %, one scale and shift per video;
    # PointOdyssey (250), ScanNet (90), Bonn (110), DyDToF (200), DyDToF (100)
    paper = {
        "RollingDepth fast": [(9.6, 90.4), (10.1, 89.7), (7.9, 93.6), (17.7, 69.6), (12.7, 81.6)],
        "RollingDepth": [(9.6, 90.5), (9.3, 91.6), (7.9, 93.9), (17.3, 71.7), (12.3, 83.0)],
    }
    columns = [("pointodyssey", "selected_250frame_masked"), ("scannet", "rgbd_test_90frame_crop"),
               ("bonn", "5_seq_110frame"), ("dydtof", "extracted_200frame_sub16"), ("dydtof", "extracted_100frame_sub16")]
    for variant, pairs in paper.items():
        numbers = PUBLISHED[variant]
        assert set(numbers) == set(columns)
        assert [(round(100 * numbers[c]["abs_rel"], 1), round(100 * numbers[c]["delta1"], 1)) for c in columns] == pairs
    for dataset, split in columns:  # each column is a bundled split of that dataset, the first its default
        assert split in bundled_splits(dataset)
    assert DATASETS["dydtof"].default_split.startswith("extracted_200frame")  # "DyDToF-200"
    assert published("dydtof", "extracted_100frame_sub16")["RollingDepth"]["delta1"] == 0.830
    assert published("scannet", "rgbd_test_90frame_crop_sub20") == {} and published("sintel", "clean") == {}
