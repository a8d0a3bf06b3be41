"""``eval-depth``: score ``run-video`` predictions against ground-truth depth.

    eval-depth --pred output/clip_pred.npy --gt clip_depth.npy --rgb clip.mp4 -o eval/
    eval-depth --pred output/ --gt gt/ --gt-scale 5000 --rgb videos/ -o eval/
    eval-depth --dataset bonn --root /data/bonn -o eval/bonn -p fast     # a whole benchmark

With ``--dataset`` the command reads a benchmark in its published layout
(:mod:`rollingdepth.evaluation.datasets`), runs the model on every sequence of the split (resumable;
shared across ranks under torchrun) or takes ``--predictions``, scores every sequence and
writes the paper-style table with the published numbers beside ours.
"""

from __future__ import annotations

import csv
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from rollingdepth._version import __version__
from rollingdepth.frontends.run_video import _reporter, run_app
from rollingdepth.frontends.options import LogEvery, Progress, Quiet, Verbose
from rollingdepth.frontends.progress import Reporter, start_share
from rollingdepth.io.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputError, atomic_path, natural_key

app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})

METRICS = ("abs_rel", "rmse", "delta1", "delta2", "delta3", "opw")
PRED_SUFFIX = "_pred.npy"
PRED_FOLDERS = ("_exr", "_depth16")  # run-video's EXR and 16-bit PNG sequences
GT_SUFFIXES = (".npy", "_depth.npy", "_gt.npy")


def _version(value: bool):
    if value:
        typer.echo(f"rollingdepth {__version__}")
        raise typer.Exit()


def _pred_stem(path: Path) -> str:
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
    for name, p in (("--pred", pred), ("--gt", gt), ("--rgb", rgb), ("--mask", mask)):
        if p is not None and not p.exists():
            raise InputError(f"{name} {p}: no such file or folder")
    if pred.is_file() or _is_sequence(pred):
        return [{"stem": _pred_stem(pred), "pred": pred, "gt": gt, "rgb": rgb, "mask": mask}]
    found: dict[str, Path] = {}  # stem -> its prediction: the .npy, else the EXR, else the PNG16 sequence
    for pattern in (f"*{PRED_SUFFIX}", *(f"*{suffix}" for suffix in PRED_FOLDERS)):
        for p in pred.glob(pattern):
            if p.is_file() == pattern.endswith(".npy"):
                found.setdefault(_pred_stem(p), p)
    preds = [found[stem] for stem in sorted(found, key=natural_key)]
    if not preds:
        raise InputError(f"--pred {pred}: no *{PRED_SUFFIX} files, *_exr/ or *_depth16/ folders in the folder")
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


@dataclass
class _Context:
    """How the command reports: consoles, progress and messages (``report``, the events of
    :mod:`rollingdepth.frontends.progress`), the one-line failure (exits), verbosity."""

    err: Console
    out: Console
    fail: Callable
    quiet: bool
    verbose: bool
    report: Reporter

    def log(self, message: str) -> None:
        self.report.info(message)  # shown unless --quiet


FILES, DS, PIPE, PROTO, RUN = "Files (--pred, --gt)", "Benchmark (--dataset)", "Prediction (--dataset)", "Protocol", "Run"


@app.command(no_args_is_help=True)
def eval_depth(
    pred: Annotated[Optional[Path], typer.Option("--pred", metavar="PATH", help="A run-video prediction ({stem}_pred.npy, {stem}_exr/ or {stem}_depth16/ with its run.json beside it), or a folder of them.", rich_help_panel=FILES)] = None,
    gt: Annotated[Optional[Path], typer.Option("--gt", metavar="PATH", help="GT depth: .npy [N, H, W] or a folder of 16-bit PNGs; a folder of those (by stem) for a folder of predictions.", rich_help_panel=FILES)] = None,
    rgb: Annotated[Optional[Path], typer.Option("--rgb", metavar="PATH", help="The input video(s), for the optical-flow warping error.", rich_help_panel=FILES)] = None,
    mask: Annotated[Optional[Path], typer.Option("--mask", metavar="PATH", help="Valid-pixel masks: .npy or a folder of PNGs (non-zero = valid).", rich_help_panel=FILES)] = None,
    gt_scale: Annotated[float, typer.Option("--gt-scale", help="Divide GT values by this (1000 for mm, 5000 for TUM/Bonn PNGs).", rich_help_panel=FILES)] = 1.0,
    dataset: Annotated[Optional[str], typer.Option("--dataset", metavar="NAME", help="Score a whole benchmark: pointodyssey, scannet, bonn, dydtof, sintel, kitti or nyuv2.", rich_help_panel=DS)] = None,
    root: Annotated[Optional[Path], typer.Option("--root", metavar="DIR", help="Where the dataset is stored, in its published layout.", rich_help_panel=DS)] = None,
    split: Annotated[Optional[str], typer.Option("--split", metavar="NAME|DIR", help="A bundled split or a folder of split CSVs. (default: the paper's)", rich_help_panel=DS)] = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", metavar="DIR", help="Score {sequence}_pred.npy files made earlier instead of running the model.", rich_help_panel=DS)] = None,
    preset: Annotated[Optional[str], typer.Option("-p", "--preset", metavar="NAME|YAML", help="Preset of the run: fast, fast1024, full, paper, none or a YAML file. (default: fast)", rich_help_panel=PIPE)] = None,
    checkpoint: Annotated[Optional[str], typer.Option("-c", "--checkpoint", metavar="ID|PATH", help="Hub id or local folder. (default: prs-eth/rollingdepth-v1-0)", rich_help_panel=PIPE)] = None,
    processing_res: Annotated[Optional[int], typer.Option("--res", "--processing-resolution", metavar="INT", help="Longer edge for processing; 0 keeps the size.", rich_help_panel=PIPE)] = None,
    dilations: Annotated[Optional[str], typer.Option("-d", "--dilations", metavar="D[,D..]", help="Snippet dilations, e.g. 1,10,25.", rich_help_panel=PIPE)] = None,
    refine_step: Annotated[Optional[int], typer.Option("--refine-step", metavar="INT", help="Refinement steps (0 = none).", rich_help_panel=PIPE)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", metavar="fp16|bf16|fp32", help="fp16 becomes fp32 on CPU.", rich_help_panel=PIPE)] = None,
    device: Annotated[Optional[str], typer.Option("--device", metavar="NAME", help="cuda, cuda:1, mps or cpu. (default: best available)", rich_help_panel=PIPE)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", metavar="INT", help="Seed of the initial noise. (default: 0)", rich_help_panel=PIPE)] = None,
    min_depth: Annotated[Optional[float], typer.Option("--min-depth", help="Valid GT above this depth. (default: the dataset's, else 1e-3)", rich_help_panel=PROTO)] = None,
    max_depth: Annotated[Optional[float], typer.Option("--max-depth", help="Valid GT below this depth. (default: the dataset's, else 80)", rich_help_panel=PROTO)] = None,
    align: Annotated[str, typer.Option("--align", metavar="video|frame|depth", help="Scale and shift per video or per frame in disparity, or per video in depth.", rich_help_panel=PROTO)] = "video",
    average: Annotated[Optional[str], typer.Option("--average", metavar="pixels|frames", help="Pool a video's valid pixels, or average per-frame metrics. (default: frames with --dataset, else pixels)", rich_help_panel=PROTO)] = None,
    output_dir: Annotated[Path, typer.Option("-o", "--output-dir", metavar="DIR", help="Where metrics, tables, plots (and with --dataset the predictions) go.", rich_help_panel=RUN)] = Path("eval"),
    quiet: Quiet = False,
    progress: Progress = "auto",
    log_every: LogEvery = 30.0,
    verbose: Verbose = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.", rich_help_panel=RUN)] = None,
) -> None:
    """Score depth predictions against ground truth: AbsRel, RMSE, delta1-3, OPW and TAE.

    Files: [bold]eval-depth --pred clip_pred.npy --gt clip_depth.npy --rgb clip.mp4[/]
    Benchmark: [bold]eval-depth --dataset bonn --root /data/bonn -o eval/ -p fast[/]
    """
    from rollingdepth.evaluation.metrics import ALIGN_MODES, AVERAGE_MODES

    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    report = _reporter(progress, quiet, log_every, err)

    def fail(message: str, code: int = 2):
        report.error(message)
        raise typer.Exit(code)

    if align not in ALIGN_MODES:
        fail(f"--align: unknown mode {align!r}; expected one of {', '.join(ALIGN_MODES)}")
    if average is not None and average not in AVERAGE_MODES:
        fail(f"--average: unknown mode {average!r}; expected one of {', '.join(AVERAGE_MODES)}")
    ctx = _Context(err=err, out=out, fail=fail, quiet=quiet, verbose=verbose, report=report)
    if dataset is not None:
        if pred is not None or gt is not None or rgb is not None or mask is not None:
            fail("--dataset reads ground truth and frames from --root; --pred/--gt/--rgb/--mask are for single files")
        if root is None:
            fail("--dataset needs --root DIR, the folder where the dataset is stored")
        run_benchmark(ctx, dataset, root, split, predictions, output_dir, align, average or "frames", min_depth, max_depth,
                      dict(preset=preset, checkpoint=checkpoint, processing_res=processing_res, dilations=dilations,
                           refine_step=refine_step, dtype=dtype, device=device, seed=seed))
        return
    benchmark_only = {"--root": root, "--split": split, "--predictions": predictions, "--preset": preset,
                      "--checkpoint": checkpoint, "--res": processing_res, "--dilations": dilations,
                      "--refine-step": refine_step, "--dtype": dtype, "--device": device, "--seed": seed}
    given = [name for name, value in benchmark_only.items() if value is not None]
    if given:
        fail(f"{given[0]} belongs to --dataset; for single files give --pred and --gt")
    if pred is None or gt is None:
        fail("give --pred and --gt (files or folders), or --dataset NAME --root DIR for a benchmark")
    min_depth = 1e-3 if min_depth is None else min_depth
    max_depth = 80.0 if max_depth is None else max_depth
    score_files(ctx, pred, gt, rgb, mask, output_dir, gt_scale, min_depth, max_depth, align, average or "pixels")


def score_files(ctx: _Context, pred: Path, gt: Path, rgb: Path | None, mask: Path | None, output_dir: Path,
                gt_scale: float, min_depth: float, max_depth: float, align: str, average: str) -> None:
    """``--pred``/``--gt`` mode: score prediction files against GT files, matched by stem."""
    from rollingdepth.evaluation.metrics import evaluate_video

    out, fail, quiet, verbose = ctx.out, ctx.fail, ctx.quiet, ctx.verbose

    started = time.perf_counter()
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
            prediction = load_prediction(Path(job["pred"]))
            truth = load_depth(Path(job["gt"]), gt_scale)
            valid = load_mask(Path(job["mask"])) if job["mask"] is not None else None
            frames = load_rgb(Path(job["rgb"])) if job["rgb"] is not None else None
            result = evaluate_video(prediction, truth, mask=valid, rgb=frames, align=align, average=average,
                                    min_depth=min_depth, max_depth=max_depth)
        except (ValueError, OSError) as exc:
            failures[stem] = " ".join(str(exc).split())
            ctx.report.error(f"{stem}: {failures[stem]}", video=stem, traceback=traceback.format_exc() if verbose else None)
            continue
        videos[stem] = result.metrics
        _plot(output_dir / f"{stem}_per_frame.png", stem, result.per_frame)

    keys = [k for k in METRICS if any(k in m for m in videos.values())]
    mean = _mean(videos, keys)
    report = {
        "videos": videos,
        "mean": mean,
        "failed": failures,
        "settings": {"align": align, "average": average, "gt_scale": gt_scale, "min_depth": min_depth,
                     "max_depth": max_depth, "pred": str(pred), "gt": str(gt), "rgb": str(rgb) if rgb else None},
    }
    _write_json(output_dir / "metrics.json", report)
    _write_csv(output_dir / "metrics.csv", ["video", *keys],
               [[stem, *(m.get(k, "") for k in keys)] for stem, m in videos.items()]
               + ([["mean", *(mean[k] for k in keys)]] if videos else []))

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
    ctx.report.summary(_results([job["stem"] for job in jobs], failures), time.perf_counter() - started, metrics=mean)
    if failures:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- benchmarks
METRICS_BENCH = ("abs_rel", "delta1", "rmse", "delta2", "delta3", "opw", "tae")
# settings that change a prediction: a folder of predictions made with others is not reused
RUN_OPTIONS = {"preset": "--preset", "checkpoint": "--checkpoint", "processing_res": "--res", "dilations": "--dilations",
               "refine_step": "--refine-step", "dtype": "--dtype", "device": "--device", "seed": "--seed"}
PREDICTION_KEYS = ("checkpoint", "processing_res", "dilations", "snippet_lengths", "cap_dilation", "refine_step",
                   "refine_snippet_len", "refine_start_dilation", "dtype", "seed", "coalign", "attn_span")


def run_benchmark(ctx: _Context, dataset: str, root: Path, split: str | None, predictions: Path | None,
                  output_dir: Path, align: str, average: str, min_depth: float | None, max_depth: float | None,
                  run_options: dict) -> None:
    """``--dataset`` mode: predict every sequence of the split (resumable), score, write the tables."""
    from rollingdepth.evaluation.datasets import DATASETS, load_sequences

    started = time.perf_counter()
    try:
        sequences = load_sequences(dataset, root, split)
    except ValueError as exc:
        ctx.fail(str(exc))
    spec = DATASETS[dataset]
    split = split or spec.default_split
    min_depth = spec.min_depth if min_depth is None else min_depth
    max_depth = spec.max_depth if max_depth is None else max_depth
    if not 0 < min_depth < max_depth:
        ctx.fail(f"--min-depth/--max-depth: need 0 < min < max, got {min_depth}, {max_depth}")
    if predictions is not None:
        given = [RUN_OPTIONS[k] for k, v in run_options.items() if v is not None]
        if given:
            ctx.fail(f"{given[0]}: --predictions scores existing files; the model does not run")
        if not predictions.is_dir():
            ctx.fail(f"--predictions {predictions}: no such folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ctx.fail(f"--output-dir {output_dir}: cannot write there ({exc.strerror or exc})")

    failures: dict[str, str] = {}
    if predictions is not None:
        pred_dir, method = predictions, f"predictions in {predictions}"
    else:
        cfg = _prediction_config(ctx, run_options)
        pred_dir = output_dir / "predictions"
        _claim_prediction_folder(ctx, pred_dir, cfg)
        failures, main_rank = _predict_all(ctx, sequences, pred_dir, cfg)
        if not main_rank:  # rank 0 scores; every rank fails when a sequence failed anywhere
            if failures:
                raise typer.Exit(1)
            return
        method = f"ours: preset {run_options['preset'] or 'fast'}, {cfg.checkpoint}"

    videos, frames = {}, {}
    for i, seq in enumerate(sequences, 1):
        if seq.name in failures:
            continue
        try:
            result = _score_sequence(seq, pred_dir, align, average, min_depth, max_depth)
        except Exception as exc:  # one sequence that cannot be scored does not stop the others
            _report_failure(ctx, failures, seq.name, exc)
            continue
        videos[seq.name], frames[seq.name] = result.metrics, len(seq)
        ctx.log(f"scored {i}/{len(sequences)} {seq.name}: AbsRel {100 * result.metrics['abs_rel']:.2f} %")

    keys = [k for k in METRICS_BENCH if any(k in m for m in videos.values())]
    mean = _mean(videos, keys)
    published = _published(dataset, split)
    settings = {"dataset": dataset, "split": split, "root": str(root), "align": align, "average": average,
                "min_depth": min_depth, "max_depth": max_depth, "method": method,
                "predictions": str(pred_dir), "sequences": len(sequences)}
    _write_json(output_dir / "metrics.json", {"sequences": videos, "frames": frames, "mean": mean,
                                               "failed": failures, "published": published, "settings": settings})
    _write_csv(output_dir / "metrics.csv", ["sequence", "frames", *keys],
               [[name, frames[name], *(m.get(k, "") for k in keys)] for name, m in videos.items()]
               + ([["mean", sum(frames.values()), *(mean[k] for k in keys)]] if videos else []))
    rows = _summary_rows(method, dataset, split, mean, len(videos), len(sequences), published)
    _write_csv(output_dir / "table.csv", ["method", "dataset", "split", "sequences", "abs_rel_pct", "delta1_pct",
                                          "opw", "tae_pct", "source"], rows)
    markdown = _markdown(spec.title, split, rows, videos, frames, failures, settings, published)
    with atomic_path(output_dir / "table.md") as tmp:
        tmp.write_text(markdown)

    if not ctx.quiet:
        table = Table(title=f"eval-depth: {spec.title}, split {split}")
        for name in ("method", "AbsRel %", "δ1 %", "OPW", "TAE %"):
            table.add_column(name, justify="left" if name == "method" else "right")
        for r in rows:
            table.add_row(r[0] + (f" ({r[3]})" if r[3] else ""), *(str(v) for v in r[4:8]))
        ctx.out.print(table)
        ctx.out.print(f"reports: {output_dir / 'table.md'}, {output_dir / 'table.csv'}, {output_dir / 'metrics.csv'}, "
                      f"{output_dir / 'metrics.json'}")
    ctx.report.summary(_results([seq.name for seq in sequences], failures), time.perf_counter() - started, metrics=mean)
    if failures:
        raise typer.Exit(1)


def _prediction_config(ctx: _Context, options: dict):
    """The run settings: preset, then the options given; outputs cut to what scoring needs."""
    from rollingdepth.runtime.run_config import RunConfig

    overrides = {k: v for k, v in options.items() if k != "preset"}
    if options["dilations"] is not None:
        try:
            overrides["dilations"] = [int(v) for v in options["dilations"].replace(" ", "").split(",") if v]
        except ValueError:
            ctx.fail(f"--dilations: {options['dilations']!r} is not a comma-separated list of integers")
    overrides.update(save_npy=True, save_sbs=False, save_snippets=False, save_png16=False, restore_res=False,
                     cmaps=["Greys_r"], start_frame=0, frame_count=0)
    try:
        cfg = RunConfig.build(options["preset"], overrides)
        if cfg.device is not None:
            from rollingdepth.method.device import resolve_device

            resolve_device(cfg.device)
    except ValueError as exc:
        ctx.fail(str(exc))
    return cfg


def _claim_prediction_folder(ctx: _Context, pred_dir: Path, cfg) -> None:
    """Record the prediction settings; refuse a folder whose predictions were made with others."""
    wanted = json.loads(json.dumps({k: getattr(cfg, k) for k in PREDICTION_KEYS}))  # as JSON reads it back
    record = pred_dir / "prediction_settings.json"
    try:
        have = json.loads(record.read_text()) if record.is_file() else wanted
    except (OSError, ValueError):
        have = wanted  # unreadable: rewritten below
    diff = [f"{k} {have.get(k)!r} there, {wanted[k]!r} now" for k in PREDICTION_KEYS if have.get(k) != wanted[k]]
    if diff:
        ctx.fail(f"--output-dir {pred_dir.parent}: its predictions were made with other settings "
                 f"({'; '.join(diff)}); choose another --output-dir")
    try:
        pred_dir.mkdir(parents=True, exist_ok=True)
        _write_json(record, wanted)
    except OSError as exc:
        ctx.fail(f"--output-dir {pred_dir.parent}: cannot write there ({exc.strerror or exc})")


def _predict_all(ctx: _Context, sequences: list, pred_dir: Path, cfg) -> tuple[dict[str, str], bool]:
    """Predict the sequences whose outputs are not complete; this rank's share under torchrun.

    Returns the failures of every rank and whether this is the rank that scores (rank 0).
    """
    from rollingdepth.runtime.distributed import balanced_shards, init_distributed

    dist = init_distributed()
    clean = False
    try:
        mine = sequences
        if dist.enabled:
            shards = balanced_shards([len(s) for s in sequences], dist.world_size)
            mine = [sequences[i] for i in shards[dist.rank]]
        start_share(ctx.report, dist, len(mine), len(mine))
        if dist.enabled:
            ctx.log(f"{dist.world_size} processes: {len(sequences)} sequences, balanced by frame count")
        with ctx.report:  # live bars (on a terminal) while predicting
            failures = _predict_share(ctx, mine, pred_dir, cfg, dist)
        merged: dict[str, str] = {}
        for part in dist.all_gather(failures):
            merged.update(part)
        clean = True
    finally:
        dist.close(barrier=clean)
    return merged, dist.is_main


def _predict_share(ctx: _Context, sequences: list, pred_dir: Path, cfg, dist) -> dict[str, str]:
    """Run the model on each sequence not yet complete; return ``{sequence: error}``."""
    import shutil

    from rollingdepth.runtime.video_job import load_pipeline, outputs_complete, process_video

    report = ctx.report
    failures: dict[str, str] = {}
    pipe = None
    for k, seq in enumerate(sequences):
        if outputs_complete(pred_dir, seq.name, cfg):
            report.video_skipped(seq.name, "prediction complete")
            continue
        if pipe is None:
            try:
                pipe = load_pipeline(cfg.checkpoint, cfg.dtype, dist.device(cfg.device), compile=cfg.compile,
                                     channels_last=cfg.channels_last, tf32=cfg.tf32)
            except InputError as exc:
                if not dist.enabled:
                    ctx.fail(str(exc))
                # the other ranks wait for this one: report every remaining sequence instead of leaving
                for rest in sequences[k:]:
                    failures[rest.name] = " ".join(str(exc).split())
                report.error(str(exc))
                break
            pipe.set_progress_bar_config(disable=True)
        work = pred_dir / f".{seq.name}.frames"
        started = time.perf_counter()
        report.video_start(seq.name)
        try:
            source = _sequence_source(seq, work)
            result = process_video(pipe, source, pred_dir, cfg, report.callback(seq.name))
            if not result.ok:
                raise RuntimeError(result.error)
        except Exception as exc:  # one failing sequence does not stop the others
            _report_failure(ctx, failures, seq.name, exc, video=True)
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report.end_stage(seq.name)
        report.video_done(seq.name, len(seq), time.perf_counter() - started, getattr(result, "outputs", None) or None)
    return failures


def _sequence_source(seq, work: Path):
    """The frames of a sequence as the pipeline's input; resized or cropped copies when needed."""
    import cv2
    import shutil

    from rollingdepth.io.video_io import VideoSource

    missing = [p for p in seq.rgb if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: no such frame ({len(missing)} of {len(seq)} missing)")
    images = list(seq.rgb)
    if seq.needs_preparing():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        images = []
        for i in range(len(seq)):
            path = work / f"{i:06d}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(seq.rgb_frame(i), cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
            images.append(path)
    first = cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED)
    return VideoSource(path=Path(seq.name), images=images, fps=30.0, size=first.shape[:2], frame_count=len(images))


def _score_sequence(seq, pred_dir: Path, align: str, average: str, min_depth: float, max_depth: float):
    from rollingdepth.evaluation.metrics import evaluate_video

    path = pred_dir / f"{seq.name}{PRED_SUFFIX}"
    if not path.is_file():
        raise InputError(f"no prediction {path.name} in {pred_dir}")
    prediction = load_prediction(path)
    return evaluate_video(prediction, seq.read_depth(), mask=seq.read_mask(), rgb=seq.read_rgb(),
                          cameras=seq.read_cameras(), align=align, average=average,
                          min_depth=min_depth, max_depth=max_depth)


def _published(dataset: str, split: str) -> dict:
    """The paper's numbers for this dataset and split, when it reports any."""
    from rollingdepth.evaluation.datasets import PAPER, published

    numbers = published(dataset, split)
    return {"source": PAPER, "split": split, "variants": numbers} if numbers else {}


def _pct(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _summary_rows(method, dataset, split, mean, done, total, published) -> list[list]:
    rows = [[method, dataset, split, f"{done}/{total}", _pct(mean.get("abs_rel")), _pct(mean.get("delta1")),
             "-" if "opw" not in mean else f"{mean['opw']:.4f}", _pct(mean.get("tae")), "this run"]]
    for variant, numbers in published.get("variants", {}).items():
        rows.append([f"{variant}, published", dataset, split, "", _pct(numbers["abs_rel"]),
                     _pct(numbers["delta1"]), "-", "-", published["source"]])
    return rows


def _markdown(title, split, rows, videos, frames, failures, settings, published) -> str:
    lines = [f"# {title}, split {split}", "",
             "| method | sequences | AbsRel (%) ↓ | δ1 (%) ↑ | OPW ↓ | TAE (%) ↓ |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[3] or '-'} | {r[4]} | {r[5]} | {r[6]} | {r[7]} |")
    lines += ["", f"Valid ground truth: {settings['min_depth']:g} < depth < {settings['max_depth']:g} m; "
              f"one scale and shift per {'video' if settings['align'] == 'video' else settings['align']} "
              f"({'in depth' if settings['align'] == 'depth' else 'in disparity space'}); metrics averaged over "
              f"{settings['average']}, then over sequences. OPW in metres; see docs/evaluation.md."]
    if published:
        lines.append(f"Published: {published['source']}, Table 1 (\"fast\": dilations 1, 25, no refinement).")
    else:
        from rollingdepth.evaluation.datasets import published_splits

        splits = published_splits(settings["dataset"])
        if splits:
            lines.append(f"Published RollingDepth numbers are for split {' and '.join(splits)}; not shown for "
                         f"split {split}.")
        else:
            lines.append(f"The RollingDepth paper reports no numbers on {title}.")
    lines += ["", "## Per sequence", "", "| sequence | frames | AbsRel (%) | δ1 (%) | OPW | TAE (%) |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, m in videos.items():
        opw = "-" if "opw" not in m or not np.isfinite(m["opw"]) else f"{m['opw']:.4f}"
        lines.append(f"| {name} | {frames[name]} | {_pct(m.get('abs_rel'))} | {_pct(m.get('delta1'))} | {opw} | "
                     f"{_pct(m.get('tae'))} |")
    for name, message in failures.items():
        lines.append(f"| {name} | - | failed: {message} | | | |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- helpers
def _report_failure(ctx: _Context, failures: dict, name: str, exc: BaseException, video: bool = False) -> None:
    """Record a sequence's error as one line and report it (the traceback with --verbose):
    as the failure of its prediction (``video``), or of its scoring."""
    trace = traceback.format_exc() if ctx.verbose else None
    message = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
    failures[name] = " ".join(message.split()) or type(exc).__name__
    if video:
        ctx.report.video_failed(name, failures[name], trace)
    else:
        ctx.report.error(f"{name}: {failures[name]}", video=name, traceback=trace)


def _results(names: list[str], failures: dict[str, str]) -> list:
    """One result per sequence or video, for the summary event."""
    from rollingdepth.runtime.video_job import VideoResult

    return [VideoResult(name=name, error=failures.get(name)) for name in names]


def _run_report(path: Path) -> dict | None:
    """The ``{stem}_run.json`` beside a prediction, if there is one."""
    report = path.parent / f"{_pred_stem(path)}_run.json"
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
        check_openexr("--pred")
        frames = [read_exr(p) for p in files if p.suffix.lower() == ".exr"]
    else:
        if report is None:
            raise InputError(f"{path}: a 16-bit PNG sequence needs its {_pred_stem(path)}_run.json beside it "
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


def _mean(videos: dict, keys: list[str]) -> dict[str, float]:
    if not videos:
        return {}
    return {k: float(np.nanmean([m[k] for m in videos.values() if k in m])) for k in keys}


def _write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``eval-depth``."""
    run_app(app, "eval-depth", argv)


if __name__ == "__main__":
    main()
