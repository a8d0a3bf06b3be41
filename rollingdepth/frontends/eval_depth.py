"""``eval-depth``: score ``run-video`` predictions against ground-truth depth.

    eval-depth --pred output/clip_pred.npy --gt clip_depth.npy --rgb clip.mp4 -o eval/
    eval-depth --pred output/ --gt gt/ --gt-scale 5000 --rgb videos/ -o eval/
    eval-depth --dataset bonn --root /data/bonn -o eval/bonn -p fast     # a whole benchmark

With ``--dataset`` the command reads a benchmark in its published layout
(:mod:`rollingdepth.evaluation.datasets`), runs the model on every sequence of the split (resumable;
shared across ranks under torchrun) or takes ``--predictions``, scores every sequence and
writes the paper-style table with the published numbers beside ours. The files and their
matching are :mod:`rollingdepth.evaluation.prediction_files`, the reports
:mod:`rollingdepth.evaluation.tables` and :mod:`rollingdepth.evaluation.plots`; this module is the
command and its orchestration.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.table import Table

from rollingdepth.errors import InputError
from rollingdepth.evaluation.metrics import Protocol
from rollingdepth.evaluation.protocols import PROTOCOLS, default_max_depth
from rollingdepth.evaluation.options import EVAL_OPTIONS, eval_option
from rollingdepth.evaluation.plots import plot_per_frame
from rollingdepth.evaluation.prediction_files import collect, load_depth, load_mask, load_prediction, load_rgb
from rollingdepth.evaluation.tables import (METRICS, METRICS_BENCH, fmt, markdown, mean_metrics, summary_rows,
                                            write_csv, write_json)
from rollingdepth.frontends.command import EXIT_FAILED, EXIT_USAGE, make_reporter, run_app, spelling
from rollingdepth.frontends.options import (COMMAND_OPTIONS, HELP_FLAGS, RUN, Param, Reporting, arg,
                                            command_signature, given, params_of)
from rollingdepth.frontends.original_cli import original_argv
from rollingdepth.frontends.progress import Reporter, start_share
from rollingdepth.io.video_io import atomic_path
from rollingdepth.runtime.jobs import Batch, BatchItem, failure_message, run_batch
from rollingdepth.runtime.run_config import prediction_settings

app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  context_settings={"help_option_names": HELP_FLAGS})


def _fixed_settings() -> dict:
    """The run settings of every benchmark prediction, whatever the preset: a sequence is one shot, scored
    with one affine fit, so it runs whole (no shot detection, no segments); outputs cut to what scoring needs."""
    return dict(restore_res=False, cmaps=["Greys_r"], start_frame=0, max_frames=0, shots="none", segment_frames=0)


# settings that change a prediction (their declarations say so) and that a benchmark's run may differ in:
# a folder of predictions made with others is not reused
PREDICTION_KEYS = tuple(name for name in prediction_settings() if name not in _fixed_settings())
# the run settings eval-depth takes for --dataset (declared with RunConfig's fields)
PREDICTION_OPTIONS = ("preset", *PREDICTION_KEYS, "device")
# the option of any of eval-depth's parameters: its own, the commands' or a setting's
_spelling = partial(spelling, table={**COMMAND_OPTIONS, **EVAL_OPTIONS})
# eval-depth's help panels (its own options are declared in rollingdepth.evaluation.options, without presentation)
FILES = f"Files ({eval_option('pred')}, {eval_option('gt')})"
DS, PIPE, PROTO = f"Benchmark ({eval_option('dataset')})", f"Prediction ({eval_option('dataset')})", "Protocol"
_PANELS = (FILES, DS, PIPE, PROTO, RUN)


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


@dataclass
class FileInputs:
    """``--pred``/``--gt`` mode: what to score (files or folders matched by stem)."""

    pred: Path
    gt: Path
    rgb: Path | None = None
    mask: Path | None = None
    gt_scale: float = 1.0


@dataclass
class Benchmark:
    """``--dataset`` mode: the benchmark, where it is, its split, and predictions made earlier (if any)."""

    dataset: str
    root: Path
    split: str | None = None
    predictions: Path | None = None


@dataclass(frozen=True)
class EvalDepthArgs:
    """What eval-depth is given besides the prediction settings of ``--dataset`` and the reporting options."""

    pred: Path | None = arg(EVAL_OPTIONS["pred"], panel=FILES)
    gt: Path | None = arg(EVAL_OPTIONS["gt"], panel=FILES)
    rgb: Path | None = arg(EVAL_OPTIONS["rgb"], panel=FILES)
    mask: Path | None = arg(EVAL_OPTIONS["mask"], panel=FILES)
    gt_scale: float = arg(EVAL_OPTIONS["gt_scale"], 1.0, panel=FILES)
    dataset: str | None = arg(EVAL_OPTIONS["dataset"], panel=DS)
    root: Path | None = arg(EVAL_OPTIONS["root"], panel=DS)
    split: str | None = arg(EVAL_OPTIONS["split"], panel=DS)
    predictions: Path | None = arg(EVAL_OPTIONS["predictions"], panel=DS)
    min_depth: float | None = arg(EVAL_OPTIONS["min_depth"], panel=PROTO)
    max_depth: float | None = arg(EVAL_OPTIONS["max_depth"], panel=PROTO)
    align: str = arg(EVAL_OPTIONS["align"], "video", panel=PROTO)
    average: str | None = arg(EVAL_OPTIONS["average"], panel=PROTO)
    protocol: str = arg(EVAL_OPTIONS["protocol"], "rollingdepth", panel=PROTO)
    output_dir: Path = arg(COMMAND_OPTIONS["output_dir"], Path("eval"), panel=RUN,
                           help=f"Where metrics, tables, plots (and with {eval_option('dataset')} the predictions) go.")


def _params() -> list[Param]:
    """eval-depth's options: its own, with the prediction settings of ``--dataset`` in their panel after the
    benchmark's, and the reporting options last."""
    from rollingdepth.runtime.run_config import run_options

    run = run_options()
    ordered = [*params_of(EvalDepthArgs), *(Param(name, run[name], panel=PIPE) for name in PREDICTION_OPTIONS)]
    return sorted(ordered, key=lambda p: _PANELS.index(p.panel)) + params_of(Reporting)


@app.command(no_args_is_help=True)
@command_signature(_params())
def eval_depth(**values) -> None:
    """Score depth predictions against ground truth: AbsRel, RMSE, delta1-3, OPW and TAE.

    Files: [bold]eval-depth --pred clip_pred.npy --gt clip_depth.npy --rgb clip.mp4[/]
    Benchmark: [bold]eval-depth --dataset bonn --root /data/bonn -o eval/ -p fast[/]
    """
    from rollingdepth.evaluation.metrics import ALIGN_MODES, AVERAGE_MODES

    args, shown = given(EvalDepthArgs, values), given(Reporting, values)
    err = Console(stderr=True, highlight=False)
    report = make_reporter(shown, err)

    def fail(message: str, code: int = EXIT_USAGE):
        report.error(message)
        raise typer.Exit(code)

    if args.align not in ALIGN_MODES:
        fail(f"{_spelling('align')}: unknown mode {args.align!r}; expected one of {', '.join(ALIGN_MODES)}")
    if args.average is not None and args.average not in AVERAGE_MODES:
        fail(f"{_spelling('average')}: unknown mode {args.average!r}; expected one of {', '.join(AVERAGE_MODES)}")
    if args.protocol not in PROTOCOLS:
        fail(f"{_spelling('protocol')}: unknown protocol {args.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    ctx = _Context(err=err, out=Console(highlight=False), fail=fail, quiet=shown.quiet, verbose=shown.verbose,
                   report=report)
    files = ("pred", "gt", "rgb", "mask")
    if args.dataset is not None:
        if any(getattr(args, name) is not None for name in files):
            fail(f"{_spelling('dataset')} reads ground truth and frames from {_spelling('root')}; "
                 f"{'/'.join(_spelling(n) for n in files)} are for single files")
        if args.root is None:
            fail(f"{_spelling('dataset')} needs {_spelling('root')} DIR, the folder where the dataset is stored")
        protocol = Protocol(args.align, args.average or "frames", args.min_depth, args.max_depth, args.protocol)
        run_benchmark(ctx, Benchmark(args.dataset, args.root, args.split, args.predictions), protocol,
                      args.output_dir, {name: values[name] for name in PREDICTION_OPTIONS})
        return
    stray = [name for name in ("root", "split", "predictions", *PREDICTION_OPTIONS) if values[name] is not None]
    if stray:
        fail(f"{_spelling(stray[0])} belongs to {_spelling('dataset')}; for single files give "
             f"{_spelling('pred')} and {_spelling('gt')}")
    if args.pred is None or args.gt is None:
        fail(f"give {_spelling('pred')} and {_spelling('gt')} (files or folders), or {_spelling('dataset')} NAME "
             f"{_spelling('root')} DIR for a benchmark")
    protocol = Protocol(args.align, args.average or "pixels", 1e-3 if args.min_depth is None else args.min_depth,
                        80.0 if args.max_depth is None else args.max_depth, args.protocol)
    score_files(ctx, FileInputs(args.pred, args.gt, args.rgb, args.mask, args.gt_scale), protocol, args.output_dir)


# ----------------------------------------------------------------------------- --pred/--gt
def score_files(ctx: _Context, files: FileInputs, protocol: Protocol, output_dir: Path) -> None:
    """``--pred``/``--gt`` mode: score prediction files against GT files, matched by stem."""
    started = time.perf_counter()
    if files.gt_scale <= 0:
        ctx.fail(f"{_spelling('gt_scale')}: must be > 0, got {files.gt_scale}")
    if not 0 < protocol.min_depth < protocol.max_depth:
        ctx.fail(f"{_spelling('min_depth')}/{_spelling('max_depth')}: need 0 < min < max, got "
                 f"{protocol.min_depth}, {protocol.max_depth}")
    try:
        jobs = collect(files.pred, files.gt, files.rgb, files.mask)
        output_dir.mkdir(parents=True, exist_ok=True)
    except InputError as exc:
        ctx.fail(str(exc))
    except OSError as exc:
        ctx.fail(f"{_spelling('output_dir')} {output_dir}: cannot write there ({exc.strerror or exc})")
    videos, failures = _score_jobs(ctx, jobs, files.gt_scale, protocol, output_dir)
    keys = [k for k in METRICS if any(k in m for m in videos.values())]
    mean = mean_metrics(videos, keys)
    settings = {"protocol": protocol.name, "align": protocol.align, "average": protocol.average, "gt_scale": files.gt_scale,
                "min_depth": protocol.min_depth, "max_depth": protocol.max_depth, "pred": str(files.pred),
                "gt": str(files.gt), "rgb": str(files.rgb) if files.rgb else None}
    write_json(output_dir / "metrics.json", {"videos": videos, "mean": mean, "failed": failures, "settings": settings})
    write_csv(output_dir / "metrics.csv", ["video", *keys],
              [[stem, *(m.get(k, "") for k in keys)] for stem, m in videos.items()]
              + ([["mean", *(mean[k] for k in keys)]] if videos else []))
    if not ctx.quiet:
        _print_scores(ctx, protocol.align, keys, videos, mean, failures)
        ctx.out.print(f"reports: {output_dir / 'metrics.json'}, {output_dir / 'metrics.csv'}")
    ctx.report.summary(_results([job["stem"] for job in jobs], failures), time.perf_counter() - started, metrics=mean)
    if failures:
        raise typer.Exit(EXIT_FAILED)


def _score_jobs(ctx: _Context, jobs: list[dict], gt_scale: float, protocol: Protocol, output_dir: Path):
    """Score each matched prediction, plot it per frame; returns ``({stem: metrics}, {stem: error})``."""
    from rollingdepth.evaluation.protocols import score_video

    videos, failures = {}, {}
    for job in jobs:
        stem = job["stem"]
        try:
            prediction = load_prediction(Path(job["pred"]))
            truth = load_depth(Path(job["gt"]), gt_scale)
            valid = load_mask(Path(job["mask"])) if job["mask"] is not None else None
            frames = load_rgb(Path(job["rgb"])) if job["rgb"] is not None else None
            result = score_video(prediction, truth, protocol, mask=valid, rgb=frames)
        except (ValueError, OSError) as exc:
            failures[stem] = " ".join(str(exc).split())
            ctx.report.error(f"{stem}: {failures[stem]}", video=stem,
                             traceback=traceback.format_exc() if ctx.verbose else None)
            continue
        videos[stem] = result.metrics
        plot_per_frame(output_dir / f"{stem}_per_frame.png", stem, result.per_frame)
    return videos, failures


def _print_scores(ctx: _Context, align: str, keys: list[str], videos: dict, mean: dict, failures: dict) -> None:
    table = Table(title=f"eval-depth ({align} alignment)")
    table.add_column("video")
    for k in keys:
        table.add_column(k, justify="right")
    for stem, m in videos.items():
        table.add_row(stem, *(fmt(m.get(k)) for k in keys))
    if len(videos) > 1:
        table.add_row("[bold]mean[/]", *(fmt(mean[k]) for k in keys))
    for stem, message in failures.items():
        table.add_row(stem, f"[red]{message}[/]")
    ctx.out.print(table)


# ----------------------------------------------------------------------------- benchmarks
def run_benchmark(ctx: _Context, bench: Benchmark, protocol: Protocol, output_dir: Path, run_options: dict) -> None:
    """``--dataset`` mode: predict every sequence of the split (resumable), score, write the tables."""
    from rollingdepth.evaluation.datasets import DATASETS, load_sequences

    started = time.perf_counter()
    try:
        sequences = load_sequences(bench.dataset, bench.root, bench.split)
    except ValueError as exc:
        ctx.fail(str(exc))
    spec = DATASETS[bench.dataset]
    bench.split = bench.split or spec.default_split
    protocol.min_depth = spec.min_depth if protocol.min_depth is None else protocol.min_depth
    if protocol.max_depth is None:
        protocol.max_depth = default_max_depth(protocol, bench.dataset, spec.max_depth)
    if not 0 < protocol.min_depth < protocol.max_depth:
        ctx.fail(f"{_spelling('min_depth')}/{_spelling('max_depth')}: need 0 < min < max, got "
                 f"{protocol.min_depth}, {protocol.max_depth}")
    if bench.predictions is not None:
        given = [name for name, value in run_options.items() if value is not None]
        if given:
            ctx.fail(f"{_spelling(given[0])}: {_spelling('predictions')} scores existing files; the model does not run")
        if not bench.predictions.is_dir():
            ctx.fail(f"{_spelling('predictions')} {bench.predictions}: no such folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ctx.fail(f"{_spelling('output_dir')} {output_dir}: cannot write there ({exc.strerror or exc})")
    predicted = _benchmark_predictions(ctx, bench, sequences, output_dir, run_options)
    if predicted is None:
        return
    pred_dir, method, failures = predicted
    scores = _score_sequences(ctx, sequences, pred_dir, protocol, failures)
    mean = _write_benchmark_reports(ctx, bench, protocol, output_dir, predicted, scores, len(sequences))
    ctx.report.summary(_results([seq.name for seq in sequences], failures), time.perf_counter() - started, metrics=mean)
    if failures:
        raise typer.Exit(EXIT_FAILED)


def _benchmark_predictions(ctx: _Context, bench: Benchmark, sequences: list, output_dir: Path, run_options: dict):
    """Where the predictions are, how they were made and which sequences failed; None on a rank that does not score."""
    if bench.predictions is not None:
        return bench.predictions, f"predictions in {bench.predictions}", {}
    cfg = _prediction_config(ctx, run_options)
    pred_dir = output_dir / "predictions"
    _claim_prediction_folder(ctx, pred_dir, cfg)
    failures, main_rank = _predict_all(ctx, sequences, pred_dir, cfg)
    if not main_rank:  # rank 0 scores; every rank fails when a sequence failed anywhere
        if failures:
            raise typer.Exit(EXIT_FAILED)
        return None
    return pred_dir, f"ours: preset {run_options['preset'] or 'fast'}, {cfg.checkpoint}", failures


def _score_sequences(ctx: _Context, sequences: list, pred_dir: Path, protocol: Protocol, failures: dict):
    """Score every sequence that was predicted; returns ``({name: metrics}, {name: frames})``."""
    videos, frames = {}, {}
    for i, seq in enumerate(sequences, 1):
        if seq.name in failures:
            continue
        try:
            result = _score_sequence(seq, pred_dir, protocol)
        except Exception as exc:  # one sequence that cannot be scored does not stop the others
            _report_failure(ctx, failures, seq.name, exc)
            continue
        videos[seq.name], frames[seq.name] = result.metrics, len(seq)
        ctx.log(f"scored {i}/{len(sequences)} {seq.name}: AbsRel {100 * result.metrics['abs_rel']:.2f} %")
    return videos, frames


def _write_benchmark_reports(ctx: _Context, bench: Benchmark, protocol: Protocol, output_dir: Path,
                             predicted: tuple, scores: tuple, sequences: int) -> dict:
    """metrics.json, metrics.csv, table.csv, table.md and the console table; returns the mean metrics.
    ``predicted``: (folder, how it was made, failures); ``scores``: ({name: metrics}, {name: frames})."""
    from rollingdepth.evaluation.datasets import DATASETS

    (pred_dir, method, failures), (videos, frames) = predicted, scores
    dataset, split, spec = bench.dataset, bench.split, DATASETS[bench.dataset]
    keys = [k for k in METRICS_BENCH if any(k in m for m in videos.values())]
    mean = mean_metrics(videos, keys)
    published = _published(dataset, split)
    settings = {"dataset": dataset, "split": split, "root": str(bench.root), "protocol": protocol.name, "align": protocol.align,
                "average": protocol.average, "min_depth": protocol.min_depth, "max_depth": protocol.max_depth,
                "method": method, "predictions": str(pred_dir), "sequences": sequences}
    write_json(output_dir / "metrics.json", {"sequences": videos, "frames": frames, "mean": mean,
                                              "failed": failures, "published": published, "settings": settings})
    write_csv(output_dir / "metrics.csv", ["sequence", "frames", *keys],
              [[name, frames[name], *(m.get(k, "") for k in keys)] for name, m in videos.items()]
              + ([["mean", sum(frames.values()), *(mean[k] for k in keys)]] if videos else []))
    rows = summary_rows(method, dataset, split, mean, len(videos), sequences, published)
    write_csv(output_dir / "table.csv", ["method", "dataset", "split", "sequences", "abs_rel_pct", "delta1_pct",
                                         "opw", "tae_pct", "source"], rows)
    text = markdown(spec.title, split, rows, videos, frames, failures, settings, published)
    with atomic_path(output_dir / "table.md") as tmp:
        tmp.write_text(text)
    if not ctx.quiet:
        table = Table(title=f"eval-depth: {spec.title}, split {split}")
        for name in ("method", "AbsRel %", "δ1 %", "OPW", "TAE %"):
            table.add_column(name, justify="left" if name == "method" else "right")
        for r in rows:
            table.add_row(r[0] + (f" ({r[3]})" if r[3] else ""), *(str(v) for v in r[4:8]))
        ctx.out.print(table)
        ctx.out.print(f"reports: {output_dir / 'table.md'}, {output_dir / 'table.csv'}, {output_dir / 'metrics.csv'}, "
                      f"{output_dir / 'metrics.json'}")
    return mean


def _prediction_config(ctx: _Context, options: dict):
    """The run settings: preset, then the options given (parsed by their declarations), then
    :func:`_fixed_settings` and only the npy written."""
    from rollingdepth.io.output_formats import switches
    from rollingdepth.runtime.run_config import RunConfig, run_options

    declared_options = run_options()
    try:
        overrides = {k: declared_options[k].value(v) for k, v in options.items() if k != "preset"}
        overrides.update(switches(lambda fmt: fmt.name == "npy"), **_fixed_settings())
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
        ctx.fail(f"{_spelling('output_dir')} {pred_dir.parent}: its predictions were made with other settings "
                 f"({'; '.join(diff)}); choose another {_spelling('output_dir')}")
    try:
        pred_dir.mkdir(parents=True, exist_ok=True)
        write_json(record, wanted)
    except OSError as exc:
        ctx.fail(f"{_spelling('output_dir')} {pred_dir.parent}: cannot write there ({exc.strerror or exc})")


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

        def load_failed(exc: BaseException, left: list) -> None:
            from rollingdepth.runtime.outputs import VideoResult

            if not dist.enabled:
                ctx.fail(str(exc))
            # the other ranks wait for this one: report every remaining sequence instead of leaving
            batch.results.extend(VideoResult(name=item.name, error=failure_message(exc)) for item in left)
            ctx.report.error(str(exc))

        batch = Batch(pred_dir, cfg, dist, ctx.report, verbose=ctx.verbose, background=False,
                      skip_reason="prediction complete", on_load_error=load_failed, start_before_skip=False,
                      plain_errors=(ValueError, OSError))
        with ctx.report:  # live bars (on a terminal) while predicting
            run_batch([_sequence_item(seq, pred_dir) for seq in mine], batch)
        failures = {r.name: r.error for r in batch.results if r.error is not None}
        merged: dict[str, str] = {}
        for part in dist.all_gather(failures):
            merged.update(part)
        clean = True
    finally:
        dist.close(barrier=clean)
    return merged, dist.is_main


def _sequence_item(seq, pred_dir: Path) -> BatchItem:
    """A benchmark sequence as an item of the batch: its frames (copied when they need preparing)."""
    import shutil

    work = pred_dir / f".{seq.name}.frames"
    return BatchItem(name=seq.name, stem=seq.name, open=lambda: _sequence_source(seq, work), frames=len(seq),
                     cleanup=lambda: shutil.rmtree(work, ignore_errors=True))


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


def _published(dataset: str, split: str) -> dict:
    """The paper's numbers for this dataset and split, when it reports any."""
    from rollingdepth.evaluation.datasets import PAPER, published

    numbers = published(dataset, split)
    return {"source": PAPER, "split": split, "variants": numbers} if numbers else {}


def _results(names: list[str], failures: dict[str, str]) -> list:
    """One result per sequence or video, for the summary event."""
    from rollingdepth.runtime.outputs import VideoResult

    return [VideoResult(name=name, error=failures.get(name)) for name in names]


def _score_sequence(seq, pred_dir: Path, protocol: Protocol):
    from rollingdepth.evaluation.protocols import score_video
    from rollingdepth.io.output_formats import output_format

    path = output_format("npy").path(pred_dir, seq.name)
    if not path.is_file():
        raise InputError(f"no prediction {path.name} in {pred_dir}")
    prediction = load_prediction(path)
    return score_video(prediction, seq.read_depth(), protocol, mask=seq.read_mask(), rgb=seq.read_rgb(),
                       cameras=seq.read_cameras())


def _report_failure(ctx: _Context, failures: dict, name: str, exc: BaseException) -> None:
    """Record a sequence's scoring error as one line and report it (the traceback with --verbose)."""
    trace = traceback.format_exc() if ctx.verbose else None
    failures[name] = failure_message(exc)
    ctx.report.error(f"{name}: {failures[name]}", video=name, traceback=trace)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``eval-depth``; lists also as space-separated values (``-d 1 10 25``)."""
    import sys

    import typer.main

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        args = original_argv(args, typer.main.get_command(app))
    except ValueError as exc:
        Console(stderr=True, highlight=False, markup=False).print(f"Error: {exc}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    run_app(app, "eval-depth", args)


if __name__ == "__main__":
    main()
