"""Readers for the video-depth benchmarks in their published on-disk layouts.

Every dataset becomes a list of :class:`Sequence` objects: the RGB frames, the ground-truth
depth in metres (invalid pixels are 0 or NaN), an optional valid mask and, where the dataset
has them, camera intrinsics and poses. The evaluation protocol of each dataset (depth range,
crop, how metrics are averaged) lives in :data:`DATASETS`; sources for every format and
constant are in ``docs/evaluation.md``.

Split lists: the test splits of the RollingDepth paper (``rollingdepth/evaluation/data_split/``, from
the authors' repository, Apache-2.0) are one CSV per sequence (columns ``rgb,depth``, paths
relative to the sequence folder); a CSV named ``a^b.csv`` is the sequence folder ``ROOT/a/b``.
Datasets the paper does not use (Sintel, KITTI, NYUv2) are found by walking ``ROOT`` and
take a window of frames as Video-Depth-Anything's benchmark does.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from rollingdepth.io.video_io import IMAGE_EXTENSIONS, InputError, natural_key
from rollingdepth.evaluation.options import eval_option

__all__ = [
    "DATASETS",
    "PAPER",
    "PUBLISHED",
    "published",
    "published_splits",
    "SPLIT_DIR",
    "DatasetSpec",
    "Sequence",
    "load_sequences",
    "read_dpt",
    "read_png16",
    "read_sintel_cam",
]

SPLIT_DIR = Path(__file__).parent / "data_split"
DPT_TAG = 202021.25  # float32 tag opening Sintel's .dpt and .cam files

Crop = tuple[int, int, int, int]  # pixels removed at the top, bottom, left, right


# ----------------------------------------------------------------------------- file readers
def read_png16(path: Path, scale: float) -> np.ndarray:
    """A 16-bit single-channel PNG divided by ``scale``: float64 ``[H, W]`` (0 stays 0 = no depth)."""
    img = _imread(path)
    if img.dtype != np.uint16 or img.ndim != 2:
        raise InputError(f"{path}: expected a 16-bit single-channel PNG, got {img.dtype} with shape {img.shape}")
    return img.astype(np.float64) / scale


def read_dpt(path: Path) -> np.ndarray:
    """Sintel ``.dpt``: float32 tag 202021.25, int32 width, int32 height, float32 depth rows."""
    raw = _read_bytes(path)
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != DPT_TAG:
        raise InputError(f"{path}: not a Sintel .dpt file (wrong tag)")
    width, height = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    if width <= 0 or height <= 0 or len(raw) != 12 + 4 * width * height:
        raise InputError(f"{path}: .dpt header says {width}x{height}, which does not match the file size")
    return np.frombuffer(raw[12:], "<f4").reshape(height, width).astype(np.float64)


def read_sintel_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sintel ``.cam``: tag, then float64 intrinsics ``M`` (3x3) and world-to-camera ``N`` (3x4).

    Returns ``K`` [3, 3] and the camera-to-world pose [4, 4].
    """
    raw = _read_bytes(path)
    if len(raw) != 4 + 8 * 21 or np.frombuffer(raw[:4], "<f4")[0] != DPT_TAG:
        raise InputError(f"{path}: not a Sintel .cam file")
    values = np.frombuffer(raw[4:], "<f8")
    w2c = np.eye(4)
    w2c[:3] = values[9:].reshape(3, 4)
    return values[:9].reshape(3, 3).copy(), np.linalg.inv(w2c)


def read_npy_depth(path: Path) -> np.ndarray:
    """A float depth map ``[H, W]`` saved with ``np.save`` (DyDToF)."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    data = np.squeeze(data)
    if data.ndim != 2:
        raise InputError(f"{path}: expected a depth map [H, W], got shape {data.shape}")
    return data.astype(np.float64)


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A whitespace-separated text matrix (ScanNet poses and intrinsics)."""
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable matrix ({exc})") from None
    if m.shape != shape:
        raise InputError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    return m


def _imread(path: Path) -> np.ndarray:
    """An image as stored (bit depth and channels kept); ``InputError`` when missing or unreadable."""
    import cv2

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a readable image")
    return img


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_rgb(path: Path) -> np.ndarray:
    from rollingdepth.io.video_io import _read_image

    if not Path(path).is_file():
        raise InputError(f"{path}: no such frame")
    return _read_image(path)


# ----------------------------------------------------------------------------- sequences
@dataclass
class Sequence:
    """One test video: frame files, how to decode them, and its crop."""

    name: str  # output stem, e.g. "rgbd_bonn_balloon2" or "test^cab_e_3rd"
    folder: Path
    rgb: list[Path]
    depth: list[Path]
    decode: Callable[[Path], np.ndarray]  # depth file -> metres [H, W]
    crop: Callable[[int, int], Crop] = lambda h, w: (0, 0, 0, 0)
    mask: list[Path] | None = None  # non-zero = valid
    cameras: Callable[[], tuple[np.ndarray, np.ndarray] | None] | None = None  # K [N,3,3], cam-to-world [N,4,4]
    _size: tuple[int, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rgb)

    def depth_size(self) -> tuple[int, int]:
        """(H, W) of the depth maps as stored (before the crop)."""
        if self._size is None:
            self._size = self.decode(self.depth[0]).shape
        return self._size

    def _window(self) -> tuple[slice, slice, Crop]:
        h, w = self.depth_size()
        top, bottom, left, right = self.crop(h, w)
        return slice(top, h - bottom), slice(left, w - right), (top, bottom, left, right)

    def read_depth(self) -> np.ndarray:
        """Ground truth in metres, float64 ``[N, H, W]`` after the crop."""
        rows, cols, _ = self._window()
        frames = []
        for p in self.depth:
            d = self.decode(p)
            if d.shape != self.depth_size():
                raise InputError(f"{p}: depth of size {d.shape}, the sequence's first is {self.depth_size()}")
            frames.append(d[rows, cols])
        return np.stack(frames)

    def read_mask(self) -> np.ndarray | None:
        """Valid-pixel mask ``[N, H, W]`` (bool) from the mask files, or None."""
        if self.mask is None:
            return None
        rows, cols, _ = self._window()
        out = []
        for p in self.mask:
            m = _imread(p)
            m = m.reshape(m.shape[0], m.shape[1], -1).max(axis=2) > 0
            if m.shape != self.depth_size():
                raise InputError(f"{p}: mask of size {m.shape}, the depth maps are {self.depth_size()}")
            out.append(m[rows, cols])
        return np.stack(out)

    def rgb_frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as uint8 ``[H, W, 3]``: resized to the depth's size if needed, then cropped."""
        import cv2

        img = _read_rgb(self.rgb[i])
        h, w = self.depth_size()
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        rows, cols, _ = self._window()
        return np.ascontiguousarray(img[rows, cols])

    def read_rgb(self) -> np.ndarray:
        """All frames, uint8 ``[N, H, W, 3]`` at the ground truth's (cropped) size."""
        return np.stack([self.rgb_frame(i) for i in range(len(self))])

    def needs_preparing(self) -> bool:
        """Whether the frames must be resized or cropped before the model sees them."""
        first = _imread(self.rgb[0])
        return first.shape[:2] != self.depth_size() or any(self._window()[2])

    def read_cameras(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Intrinsics ``[N, 3, 3]`` (for the cropped frames) and camera-to-world poses ``[N, 4, 4]``."""
        if self.cameras is None:
            return None
        cams = self.cameras()
        if cams is None:
            return None
        k, poses = cams
        k = k.copy()
        top, _, left, _ = self._window()[2]
        k[:, 0, 2] -= left
        k[:, 1, 2] -= top
        return k, poses


# ----------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark: where its splits come from and its evaluation protocol."""

    name: str
    title: str
    min_depth: float  # valid ground truth: min_depth < GT < max_depth
    max_depth: float
    default_split: str
    split_folder: str | None = None  # under SPLIT_DIR; None: sequences found under ROOT
    windows: dict | None = None  # split name -> (start, stop) frame window, for found sequences
    layout: str = ""  # one line for error messages and --help


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("pointodyssey", "PointOdyssey", 1e-3, 1000.0, "selected_250frame_masked", "pointodyssey",
                    layout="ROOT/{train,test}/SEQ/rgbs/rgb_00000.jpg, depths_masked/depth_00000.png"),
        DatasetSpec("scannet", "ScanNet", 1e-3, 10.0, "rgbd_test_90frame_crop", "scannet",
                    layout="ROOT/sceneXXXX_XX/color/0.jpg, depth/0.png, pose/0.txt, intrinsic/intrinsic_depth.txt"),
        DatasetSpec("bonn", "Bonn", 1e-3, 10.0, "5_seq_110frame", "bonn_rgbd",
                    layout="ROOT/rgbd_bonn_SEQ/rgb/TIME.png, depth/TIME.png"),
        DatasetSpec("dydtof", "DyDToF", 1e-3, 10.0, "extracted_200frame_sub16", "dydtof",
                    layout="ROOT/SCENE/SHOT/ColorImage/shot1.0050.jpeg, DepthMap/shot1.0050.npy"),
        DatasetSpec("sintel", "Sintel", 1e-3, 70.0, "clean", windows={"clean": (0, None), "final": (0, None)},
                    layout="ROOT/{clean,final}/SCENE/frame_0001.png, depth/SCENE/frame_0001.dpt, camdata_left/SCENE/frame_0001.cam"),
        DatasetSpec("kitti", "KITTI", 1e-3, 80.0, "val_110", windows={"val_110": (0, 110), "val_500": (0, 500)},
                    layout="ROOT/val/DRIVE/proj_depth/groundtruth/image_02/NAME.png, ROOT/DATE/DRIVE/image_02/data/NAME.png"),
        DatasetSpec("nyuv2", "NYUv2", 1e-3, 10.0, "vda_500", windows={"vda_500": (0, 500)},
                    layout="ROOT/SCENE/rgb/0.jpg, depth/0.png"),
    )
}

# The RollingDepth paper's splits (the defaults above) and its published accuracy, AbsRel and
# delta1 as fractions, one scale and shift per video (Ke et al., CVPR 2025, arXiv 2411.19189;
# docs/evaluation.md says which variant and what could not be verified).
PAPER = "Ke et al., Video Depth without Video Models, CVPR 2025 (arXiv 2411.19189)"
PUBLISHED: dict[str, dict[tuple[str, str], dict[str, float]]] = {
    # variant -> (dataset, split) -> metrics, from Table 1 of the paper; "fast" is the fast
    # preset (dilations 1, 25; no refinement), the other row the full method
    "RollingDepth fast": {
        ("pointodyssey", "selected_250frame_masked"): {"abs_rel": 0.096, "delta1": 0.904},
        ("scannet", "rgbd_test_90frame_crop"): {"abs_rel": 0.101, "delta1": 0.897},
        ("bonn", "5_seq_110frame"): {"abs_rel": 0.079, "delta1": 0.936},
        ("dydtof", "extracted_200frame_sub16"): {"abs_rel": 0.177, "delta1": 0.696},
        ("dydtof", "extracted_100frame_sub16"): {"abs_rel": 0.127, "delta1": 0.816},
    },
    "RollingDepth": {
        ("pointodyssey", "selected_250frame_masked"): {"abs_rel": 0.096, "delta1": 0.905},
        ("scannet", "rgbd_test_90frame_crop"): {"abs_rel": 0.093, "delta1": 0.916},
        ("bonn", "5_seq_110frame"): {"abs_rel": 0.079, "delta1": 0.939},
        ("dydtof", "extracted_200frame_sub16"): {"abs_rel": 0.173, "delta1": 0.717},
        ("dydtof", "extracted_100frame_sub16"): {"abs_rel": 0.123, "delta1": 0.830},
    },
}
PUBLISHED_VARIANTS = ("RollingDepth fast", "RollingDepth")


def published(dataset: str, split: str) -> dict[str, dict[str, float]]:
    """The paper's numbers for ``dataset`` on ``split``, by variant; empty when it reports none."""
    return {v: PUBLISHED[v][(dataset, split)] for v in PUBLISHED_VARIANTS if (dataset, split) in PUBLISHED[v]}


def published_splits(dataset: str) -> list[str]:
    """The splits of ``dataset`` the paper reports numbers on."""
    return sorted({split for numbers in PUBLISHED.values() for name, split in numbers if name == dataset})


def _dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"{eval_option('dataset')}: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def bundled_splits(name: str) -> list[str]:
    """The split names ``--split`` accepts for a dataset (besides a folder of CSVs)."""
    spec = _dataset(name)
    if spec.split_folder is None:
        return list(spec.windows or {})
    return sorted(p.name for p in (SPLIT_DIR / spec.split_folder).iterdir() if p.is_dir())


def load_sequences(name: str, root: Path, split: str | None = None) -> list[Sequence]:
    """The sequences of ``split`` (default: the paper's) of dataset ``name`` stored under ``root``.

    ``split`` is a bundled split name or a folder of split CSVs. Raises ``ValueError`` naming
    the option (``--dataset``, ``--root``, ``--split``) when they do not fit.
    """
    spec = _dataset(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{eval_option('root')} {root}: no such folder")
    split = split or spec.default_split
    if spec.split_folder is not None or Path(split).is_dir():
        seqs = _from_split_csvs(spec, root, _split_dir(spec, split))
        missing = [s for s in seqs if not s.folder.is_dir()]
        if len(missing) == len(seqs):
            raise ValueError(f"{eval_option('root')} {root}: none of the {len(seqs)} sequences of split {split!r} is there "
                             f"(looked for {missing[0].folder}; layout: {spec.layout})")
        return seqs
    if split not in (spec.windows or {}):
        raise ValueError(f"{eval_option('split')}: unknown split {split!r} for {name}; expected one of "
                         f"{', '.join(bundled_splits(name))} or a folder of split CSVs")
    finder = {"sintel": _find_sintel, "kitti": _find_kitti, "nyuv2": _find_nyuv2}[name]
    seqs = finder(root, split)
    if not seqs:
        raise ValueError(f"{eval_option('root')} {root}: no {spec.title} sequence found (layout: {spec.layout})")
    start, stop = spec.windows[split]
    for s in seqs:
        s.rgb, s.depth = s.rgb[start:stop], s.depth[start:stop]
        if s.mask is not None:
            s.mask = s.mask[start:stop]
    return seqs


def _split_dir(spec: DatasetSpec, split: str) -> Path:
    path = Path(split).expanduser()
    if path.is_dir():
        return path
    if spec.split_folder is not None and (SPLIT_DIR / spec.split_folder / split).is_dir():
        return SPLIT_DIR / spec.split_folder / split
    raise ValueError(f"{eval_option('split')}: unknown split {split!r} for {spec.name}; expected one of "
                     f"{', '.join(bundled_splits(spec.name))} or a folder of split CSVs")


_DECODERS: dict[str, Callable[[Path], np.ndarray]] = {
    "bonn": lambda p: read_png16(p, 5000.0),  # TUM convention: 5000 = 1 m
    "scannet": lambda p: read_png16(p, 1000.0),  # millimetres
    "kitti": lambda p: read_png16(p, 256.0),
    "pointodyssey": lambda p: read_png16(p, 65535.0 / 1000.0),  # 0..65535 spans 0..1000 m
    "nyuv2": lambda p: read_png16(p, 6000.0),  # as Video-Depth-Anything's extraction stores it
    "dydtof": read_npy_depth,
    "sintel": read_dpt,
}


def _scannet_crop(h: int, w: int) -> Crop:
    # DepthCrafter's ScanNet crop, as Video-Depth-Anything applies it: 8 rows and 11 columns a
    # side of the 640x480 frames (scaled for other sizes)
    rows, cols = round(8 * h / 480), round(11 * w / 640)
    return (rows, rows, cols, cols)


def _even_crop(h: int, w: int) -> Crop:
    return (0, h % 2, 0, w % 2)


def _nyu_crop(h: int, w: int) -> Crop:
    # the Eigen crop of 640x480 NYUv2 frames: rows 45..471, columns 41..601
    return (45, h - 471, 41, w - 601) if (h, w) == (480, 640) else (0, 0, 0, 0)


_CROPS = {"scannet": _scannet_crop, "kitti": _even_crop, "bonn": _even_crop, "nyuv2": _nyu_crop}


def _from_split_csvs(spec: DatasetSpec, root: Path, folder: Path) -> list[Sequence]:
    files = sorted(folder.glob("*.csv"), key=natural_key)
    if not files:
        raise ValueError(f"{eval_option('split')} {folder}: no .csv split lists in the folder")
    seqs = []
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"rgb", "depth"} <= set(reader.fieldnames):
                raise ValueError(f"{eval_option('split')} {f}: expected the columns rgb,depth (and optionally mask)")
            rows = [r for r in reader if r.get("rgb")]
        if not rows:
            raise ValueError(f"{eval_option('split')} {f}: the list names no frames")
        seq_dir = root.joinpath(*f.stem.split("^"))
        mask = [seq_dir / r["mask"] for r in rows] if rows[0].get("mask") else None
        seq = Sequence(
            name=f.stem, folder=seq_dir, rgb=[seq_dir / r["rgb"] for r in rows],
            depth=[seq_dir / r["depth"] for r in rows], decode=_DECODERS[spec.name],
            crop=_CROPS.get(spec.name, lambda h, w: (0, 0, 0, 0)), mask=mask,
        )
        if spec.name == "scannet":
            seq.cameras = _scannet_cameras(seq)
        seqs.append(seq)
    return seqs


def _scannet_cameras(seq: Sequence) -> Callable[[], tuple[np.ndarray, np.ndarray] | None]:
    """Depth intrinsics (intrinsic/intrinsic_depth.txt) and camera-to-world poses (pose/ID.txt)."""

    def load():
        k_file = seq.folder / "intrinsic" / "intrinsic_depth.txt"
        poses = [seq.folder / "pose" / f"{Path(p).stem}.txt" for p in seq.rgb]
        if not k_file.is_file() or not all(p.is_file() for p in poses):
            return None
        k = read_matrix(k_file, (4, 4))[:3, :3]
        return np.repeat(k[None], len(poses), axis=0), np.stack([read_matrix(p, (4, 4)) for p in poses])

    return load


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)


def _find_sintel(root: Path, split: str) -> list[Sequence]:
    base = root / "training" if (root / "training" / split).is_dir() else root
    seqs = []
    for scene in sorted((p for p in (base / split).glob("*") if p.is_dir()), key=natural_key):
        frames = [p for p in _images(scene) if p.suffix.lower() == ".png"]
        if not frames:
            continue
        depth = [base / "depth" / scene.name / f"{p.stem}.dpt" for p in frames]
        seq = Sequence(name=scene.name, folder=scene, rgb=frames, depth=depth, decode=read_dpt)

        def load(seq=seq, cam_dir=base / "camdata_left" / scene.name):
            paths = [cam_dir / f"{p.stem}.cam" for p in seq.rgb]
            if not all(p.is_file() for p in paths):
                return None
            ks, poses = zip(*(read_sintel_cam(p) for p in paths))
            return np.stack(ks), np.stack(poses)

        seq.cameras = load
        seqs.append(seq)
    return seqs


def _find_kitti(root: Path, split: str) -> list[Sequence]:
    seqs = []
    for drive in sorted((p for p in (root / "val").glob("*") if p.is_dir()), key=natural_key):
        depth = _images(drive / "proj_depth" / "groundtruth" / "image_02")
        if not depth:
            continue
        rgb_dir = root / drive.name[:10] / drive.name / "image_02" / "data"
        seqs.append(Sequence(name=drive.name, folder=drive, rgb=[rgb_dir / p.name for p in depth], depth=depth,
                             decode=_DECODERS["kitti"], crop=_even_crop))
    return seqs


def _find_nyuv2(root: Path, split: str) -> list[Sequence]:
    seqs = []
    for scene in sorted((p for p in root.glob("*") if p.is_dir()), key=natural_key):
        rgb = [p for p in _images(scene / "rgb") if re.fullmatch(r"\d+", p.stem)]
        if not rgb:
            continue
        depth = [scene / "depth" / f"{p.stem}.png" for p in rgb]
        seqs.append(Sequence(name=scene.name, folder=scene, rgb=rgb, depth=depth, decode=_DECODERS["nyuv2"],
                             crop=_nyu_crop))
    return seqs
