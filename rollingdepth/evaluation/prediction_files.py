"""Prediction and ground-truth files for eval-depth: loading them and matching them by stem.

A prediction is a file or folder run-video wrote in a format whose declaration can read it
(``rollingdepth.io.output_formats``: the npy, EXR and 16-bit frames, with the ``{stem}_run.json``
beside them where they need it); ground truth is an ``.npy`` ``[N, H, W]`` or a folder of 16-bit PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rollingdepth.errors import InputError
from rollingdepth.evaluation.options import eval_option
from rollingdepth.io.exports import VideoMapping
from rollingdepth.io.output_formats import (RUN_REPORT, prediction_format, prediction_patterns, read_npy_maps,
                                            readable_formats)
from rollingdepth.io.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, natural_key

__all__ = ["GT_SUFFIXES", "collect", "load_depth", "load_mask", "load_prediction", "load_rgb", "pred_stem"]

GT_SUFFIXES = (".npy", "_depth.npy", "_gt.npy")


def pred_stem(path: Path) -> str:
    for fmt in readable_formats():
        stem = fmt.stem_of(path.name)
        if stem:
            return stem
    return path.name if path.is_dir() else path.stem


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
    data = read_npy_maps(path)
    if data.ndim != 3:
        raise InputError(f"{path}: expected [N, H, W] depth, got shape {data.shape}")
    return data.astype(np.float64) / scale


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
    if prediction_format(pred) is not None:
        return [{"stem": pred_stem(pred), "pred": pred, "gt": gt, "rgb": rgb, "mask": mask}]
    found: dict[str, Path] = {}  # stem -> its prediction, in the first format that reads it (exact ones first)
    for fmt in readable_formats():
        for p in pred.glob(f"*{fmt.suffix}"):
            if p.is_file() == fmt.is_file:
                found.setdefault(pred_stem(p), p)
    preds = [found[stem] for stem in sorted(found, key=natural_key)]
    if not preds:
        raise InputError(f"{eval_option('pred')} {pred}: no {prediction_patterns('*')} in the folder")
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


def load_prediction(path: Path) -> np.ndarray:
    """A run-video prediction ``[N, H, W]``: the file or folder read by its format's declaration, then
    turned back into the prediction by the mapping its ``{stem}_run.json`` records (``depth_output``:
    ``--depth-out depth`` and ``--depth-points``, fitted or per shot, alike), so that every format and
    mode of a run scores as its inverse-depth npy does."""
    fmt = prediction_format(path)
    if fmt is None:
        raise InputError(f"{eval_option('pred')} {path}: not a prediction ({prediction_patterns()})")
    fmt.available(eval_option("pred"))
    report = RUN_REPORT.load(path.parent, pred_stem(path))
    values = fmt.read(path, report)
    entry = (report or {}).get("depth_output")
    if not entry:
        return values
    try:
        mapping = VideoMapping.from_dict(entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{RUN_REPORT.path(path.parent, pred_stem(path))}: depth_output: not a mapping this version "
                         f"reads ({type(exc).__name__}: {exc})") from None
    return mapping.to_inverse(values)
