"""``eval-depth``: score ``run-video`` predictions against ground-truth depth.

    eval-depth --pred output/clip_pred.npy --gt clip_depth.npy --rgb clip.mp4 -o eval/
    eval-depth --pred output/ --gt gt/ --gt-scale 5000 --rgb videos/ -o eval/
"""

from __future__ import annotations

import csv
import json
import traceback
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .cli import run_app
from .video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputError, atomic_path, natural_key

app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})

METRICS = ("abs_rel", "rmse", "delta1", "delta2", "delta3", "opw")
PRED_SUFFIX = "_pred.npy"
GT_SUFFIXES = (".npy", "_depth.npy", "_gt.npy")


def _version(value: bool):
    if value:
        typer.echo(f"rollingdepth {__version__}")
        raise typer.Exit()


def _pred_stem(path: Path) -> str:
    return path.name[: -len(PRED_SUFFIX)] if path.name.endswith(PRED_SUFFIX) else path.stem


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
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    if data.ndim == 4 and data.shape[1] == 1:
        data = data[:, 0]
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
    from .video_io import load_source, open_source

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
    for name, p in (("--pred", pred), ("--gt", gt), ("--rgb", rgb), ("--mask", mask)):
        if p is not None and not p.exists():
            raise InputError(f"{name} {p}: no such file or folder")
    if pred.is_file():
        return [{"stem": _pred_stem(pred), "pred": pred, "gt": gt, "rgb": rgb, "mask": mask}]
    preds = sorted(pred.glob(f"*{PRED_SUFFIX}"), key=natural_key)
    if not preds:
        raise InputError(f"--pred {pred}: no *{PRED_SUFFIX} files in the folder")
    if not gt.is_dir():
        raise InputError(f"--gt {gt}: a folder of predictions needs a folder of ground truth (matched by name)")
    jobs = []
    for p in preds:
        stem = _pred_stem(p)
        g = _match(gt, stem, "gt")
        if g is None:
            raise InputError(f"--gt {gt}: no ground truth for {stem} ({stem}.npy, {stem}_depth.npy or {stem}/)")
        r = _match(rgb, stem, "rgb") if rgb is not None and rgb.is_dir() else rgb
        m = _match(mask, stem, "mask") if mask is not None and mask.is_dir() else mask
        if rgb is not None and r is None:
            raise InputError(f"--rgb {rgb}: no video for {stem}")
        jobs.append({"stem": stem, "pred": p, "gt": g, "rgb": r, "mask": m})
    return jobs


def _plot(path: Path, stem: str, per_frame: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(per_frame)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.6 * rows), squeeze=False)
    labels = {"abs_rel": "AbsRel per frame", "opw": "OPW (frame t to t+1)"}
    for ax, (key, values) in zip(axes[:, 0], per_frame.items()):
        ax.plot(np.arange(len(values)), values, lw=1.2)
        ax.set_ylabel(labels.get(key, key))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(stem)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _fmt(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4f}"


@app.command(no_args_is_help=True)
def eval_depth(
    pred: Annotated[Path, typer.Option("--pred", metavar="PATH", help="A {stem}_pred.npy from run-video, or a folder of them.")],
    gt: Annotated[Path, typer.Option("--gt", metavar="PATH", help="GT depth: .npy [N, H, W] or a folder of 16-bit PNGs; a folder of those (by stem) for a folder of predictions.")],
    rgb: Annotated[Optional[Path], typer.Option("--rgb", metavar="PATH", help="The input video(s), for the optical-flow warping error.")] = None,
    mask: Annotated[Optional[Path], typer.Option("--mask", metavar="PATH", help="Valid-pixel masks: .npy or a folder of PNGs (non-zero = valid).")] = None,
    output_dir: Annotated[Path, typer.Option("-o", "--output-dir", metavar="DIR", help="Where metrics.json, metrics.csv and plots go.")] = Path("eval"),
    gt_scale: Annotated[float, typer.Option("--gt-scale", help="Divide GT values by this (1000 for mm, 5000 for TUM/Bonn PNGs).")] = 1.0,
    min_depth: Annotated[float, typer.Option("--min-depth", help="Valid GT above this depth.")] = 1e-3,
    max_depth: Annotated[float, typer.Option("--max-depth", help="Valid GT below this depth.")] = 80.0,
    align: Annotated[str, typer.Option("--align", metavar="video|frame|depth", help="Scale and shift per video or per frame in disparity, or per video in depth.")] = "video",
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show tracebacks of errors.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Score depth predictions against ground truth: AbsRel, RMSE, delta1-3 and OPW."""
    from .evaluation import ALIGN_MODES, evaluate_video

    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)

    def fail(message: str, code: int = 2):
        err.print(f"[red]Error:[/] {message}", soft_wrap=True)
        raise typer.Exit(code)

    if align not in ALIGN_MODES:
        fail(f"--align: unknown mode {align!r}; expected one of {', '.join(ALIGN_MODES)}")
    if gt_scale <= 0:
        fail(f"--gt-scale: must be > 0, got {gt_scale}")
    if not 0 < min_depth < max_depth:
        fail(f"--min-depth/--max-depth: need 0 < min < max, got {min_depth}, {max_depth}")
    try:
        jobs = collect(pred, gt, rgb, mask)
        output_dir.mkdir(parents=True, exist_ok=True)
    except InputError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"--output-dir {output_dir}: cannot write there ({exc.strerror or exc})")

    videos, failures = {}, {}
    for job in jobs:
        stem = job["stem"]
        try:
            prediction = np.load(job["pred"])
            if prediction.ndim == 4 and prediction.shape[1] == 1:
                prediction = prediction[:, 0]
            truth = load_depth(Path(job["gt"]), gt_scale)
            valid = load_mask(Path(job["mask"])) if job["mask"] is not None else None
            frames = load_rgb(Path(job["rgb"])) if job["rgb"] is not None else None
            result = evaluate_video(prediction, truth, mask=valid, rgb=frames, align=align,
                                    min_depth=min_depth, max_depth=max_depth)
        except (ValueError, OSError) as exc:
            if verbose:
                err.print(traceback.format_exc())
            failures[stem] = " ".join(str(exc).split())
            err.print(f"[red]Error:[/] {stem}: {failures[stem]}", soft_wrap=True)
            continue
        videos[stem] = result.metrics
        _plot(output_dir / f"{stem}_per_frame.png", stem, result.per_frame)

    keys = [k for k in METRICS if any(k in m for m in videos.values())]
    mean = {k: float(np.nanmean([m[k] for m in videos.values() if k in m])) for k in keys} if videos else {}
    report = {
        "videos": videos,
        "mean": mean,
        "failed": failures,
        "settings": {"align": align, "gt_scale": gt_scale, "min_depth": min_depth, "max_depth": max_depth,
                     "pred": str(pred), "gt": str(gt), "rgb": str(rgb) if rgb else None},
    }
    with atomic_path(output_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(output_dir / "metrics.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video", *keys])
            for stem, m in videos.items():
                writer.writerow([stem, *(m.get(k, "") for k in keys)])
            if videos:
                writer.writerow(["mean", *(mean[k] for k in keys)])

    if not quiet:
        table = Table(title=f"eval-depth ({align} alignment)")
        table.add_column("video")
        for k in keys:
            table.add_column(k, justify="right")
        for stem, m in videos.items():
            table.add_row(stem, *(_fmt(m.get(k)) for k in keys))
        if len(videos) > 1:
            table.add_row("[bold]mean[/]", *(_fmt(mean[k]) for k in keys))
        for stem, message in failures.items():
            table.add_row(stem, f"[red]{message}[/]")
        out.print(table)
        out.print(f"reports: {output_dir / 'metrics.json'}, {output_dir / 'metrics.csv'}")
    if failures:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``eval-depth``."""
    run_app(app, "eval-depth", argv)


if __name__ == "__main__":
    main()
