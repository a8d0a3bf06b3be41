"""Prediction and ground-truth files for eval-depth: loading them and matching them by stem.

A prediction is what ``run-video`` wrote: ``{stem}_pred.npy``, ``{stem}_exr/`` or
``{stem}_depth16/`` (with its ``{stem}_run.json`` beside it); ground truth is an ``.npy``
``[N, H, W]`` or a folder of 16-bit PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rollingdepth.errors import InputError
from rollingdepth.evaluation.options import eval_option
from rollingdepth.io.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, natural_key

__all__ = ["GT_SUFFIXES", "PRED_FOLDERS", "PRED_SUFFIX", "collect", "load_depth", "load_mask", "load_prediction",
           "load_rgb", "pred_stem"]

PRED_SUFFIX = "_pred.npy"
PRED_FOLDERS = ("_exr", "_depth16")  # run-video's EXR and 16-bit PNG sequences
GT_SUFFIXES = (".npy", "_depth.npy", "_gt.npy")


def pred_stem(path: Path) -> str:
    for suffix in (PRED_SUFFIX, *PRED_FOLDERS):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return path.name if path.is_dir() else path.stem


def _is_sequence(path: Path) -> bool:
    """A folder that is one prediction: run-video's ``{stem}_exr/`` or ``{stem}_depth16/``, or EXR frames."""
    return path.is_dir() and (path.name.endswith(PRED_FOLDERS) or any(path.glob("*.exr")))


def load_depth(path: Path, scale: float) -> np.ndarray:
    """GT depth ``[N, H, W]`` from a ``.npy`` file or a folder of 16-bit PNGs, divided by ``scale``."""
    import cv2

    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
        if not files:
            raise InputError(f"{path}: no depth images in the folder")
        frames = []
        for p in files:
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim != 2:
                raise InputError(f"{p}: not a single-channel depth image")
            frames.append(img.astype(np.float64))
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise InputError(f"{path}: depth images of different sizes {sorted(shapes)}")
        return np.stack(frames) / scale
    data = _read_npy_maps(path)
    if data.ndim != 3:
        raise InputError(f"{path}: expected [N, H, W] depth, got shape {data.shape}")
    return data.astype(np.float64) / scale


def _read_npy_maps(path: Path) -> np.ndarray:
    """An ``.npy`` of maps, ``[N, 1, H, W]`` taken as ``[N, H, W]``; one line when unreadable."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    return data[:, 0] if data.ndim == 4 and data.shape[1] == 1 else data


def load_mask(path: Path) -> np.ndarray:
    import cv2

    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
        if not files:
            raise InputError(f"{path}: no mask images in the folder")
        return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0 for p in files])
    data = np.load(path)
    return data.reshape(data.shape[0], *data.shape[-2:]).astype(bool)


def load_rgb(path: Path) -> np.ndarray:
    from rollingdepth.io.video_io import load_source, open_source

    entries = open_source(path)
    if len(entries) != 1:
        raise InputError(f"{path}: expected one video or one folder of frames for the RGB input")
    return load_source(entries[0]).read()


def _match(folder: Path, stem: str, kinds: str) -> Path | None:
    """The file or folder in ``folder`` belonging to ``stem`` (GT, mask or RGB)."""
    if kinds == "gt":
        for suffix in GT_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    elif kinds == "mask":
        for suffix in (".npy", "_mask.npy"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    else:
        for ext in VIDEO_EXTENSIONS:
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    if (folder / stem).is_dir():
        return folder / stem
    return None


def collect(pred: Path, gt: Path, rgb: Path | None, mask: Path | None) -> list[dict]:
    """Pairs of prediction and GT (plus RGB and mask) by stem."""
    for name, p in (("pred", pred), ("gt", gt), ("rgb", rgb), ("mask", mask)):
        if p is not None and not p.exists():
            raise InputError(f"{eval_option(name)} {p}: no such file or folder")
    if pred.is_file() or _is_sequence(pred):
        return [{"stem": pred_stem(pred), "pred": pred, "gt": gt, "rgb": rgb, "mask": mask}]
    found: dict[str, Path] = {}  # stem -> its prediction: the .npy, else the EXR, else the PNG16 sequence
    for pattern in (f"*{PRED_SUFFIX}", *(f"*{suffix}" for suffix in PRED_FOLDERS)):
        for p in pred.glob(pattern):
            if p.is_file() == pattern.endswith(".npy"):
                found.setdefault(pred_stem(p), p)
    preds = [found[stem] for stem in sorted(found, key=natural_key)]
    if not preds:
        raise InputError(f"{eval_option('pred')} {pred}: no *{PRED_SUFFIX} files, *_exr/ or *_depth16/ folders in the folder")
    if not gt.is_dir():
        raise InputError(f"{eval_option('gt')} {gt}: a folder of predictions needs a folder of ground truth (matched by name)")
    jobs = []
    for p in preds:
        stem = pred_stem(p)
        g = _match(gt, stem, "gt")
        if g is None:
            raise InputError(f"{eval_option('gt')} {gt}: no ground truth for {stem} ({stem}.npy, {stem}_depth.npy or {stem}/)")
        r = _match(rgb, stem, "rgb") if rgb is not None and rgb.is_dir() else rgb
        m = _match(mask, stem, "mask") if mask is not None and mask.is_dir() else mask
        if rgb is not None and r is None:
            raise InputError(f"{eval_option('rgb')} {rgb}: no video for {stem}")
        jobs.append({"stem": stem, "pred": p, "gt": g, "rgb": r, "mask": m})
    return jobs


def _run_report(path: Path) -> dict | None:
    """The ``{stem}_run.json`` beside a prediction, if there is one."""
    report = path.parent / f"{pred_stem(path)}_run.json"
    if not report.is_file():
        return None
    try:
        return json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{report}: not a readable run report ({exc})") from None


def _read_sequence(path: Path, report: dict | None) -> np.ndarray:
    """float ``[N, H, W]`` from a folder of EXR frames or of run-video's 16-bit PNGs."""
    import cv2

    from rollingdepth.io.exports import check_openexr, read_exr

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in (".exr", ".png")), key=natural_key)
    if not files:
        raise InputError(f"{path}: no EXR or 16-bit PNG frames in the folder")
    if files[0].suffix.lower() == ".exr":
        check_openexr(eval_option("pred"))
        frames = [read_exr(p) for p in files if p.suffix.lower() == ".exr"]
    else:
        if report is None:
            raise InputError(f"{path}: a 16-bit PNG sequence needs its {pred_stem(path)}_run.json beside it "
                             f"(the value range)")
        lo, hi = report.get("png16_range") or report["depth_range"]
        frames = []
        for p in files:
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim != 2 or img.dtype != np.uint16:
                raise InputError(f"{p}: not a single-channel 16-bit PNG")
            frames.append(lo + img.astype(np.float64) / 65535.0 * (hi - lo))  # png16_mapping of run.json
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise InputError(f"{path}: frames of different sizes {sorted(shapes)}")
    return np.stack(frames)


def load_prediction(path: Path) -> np.ndarray:
    """A run-video prediction ``[N, H, W]``, affine in the model's inverse depth: ``{stem}_pred.npy``,
    ``{stem}_exr/`` or ``{stem}_depth16/``. Outputs written with ``--depth-out depth`` (as the
    ``{stem}_run.json`` beside them says) are turned back into ``1 / depth``, which is affine in
    the prediction, so every format scores the same."""
    report = _run_report(path)
    if path.is_dir():
        prediction = _read_sequence(path, report)
    else:
        prediction = _read_npy_maps(path)
    if ((report or {}).get("depth_output") or {}).get("mode") == "depth":
        prediction = 1.0 / np.asarray(prediction, dtype=np.float64)
    return prediction
