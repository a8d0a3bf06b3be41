"""``run-video``: depth for videos, folders of videos, lists of videos and image sequences.

A thin layer: it parses options, merges them over a preset, shows progress and a summary,
and leaves the work to :mod:`rollingdepth.runtime.video_job` and the pipeline.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from rollingdepth.frontends.command import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, hdr_note, make_reporter, run_app,
                                            spelling)
from rollingdepth.frontends.options import (COMMAND_OPTIONS, HELP_FLAGS, PANELS, Param, Reporting, arg,
                                            command_signature, given, help_panel, params_of)
from rollingdepth.frontends.original_cli import original_argv
from rollingdepth.frontends.progress import Reporter, start_share
from rollingdepth.io.output_formats import RUN_REPORT
from rollingdepth.runtime.jobs import Batch, BatchItem, earlier_run, failure_message, load_model, run_batch

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": HELP_FLAGS},
)


def _summary(console: Console, results) -> None:
    table = Table(title="run-video summary", show_lines=False)
    for col in ("video", "frames", "seconds", "s/frame", "outputs or error"):
        table.add_column(col, overflow="fold")
    for r in results:
        if r.skipped:
            status = "[dim]skipped: outputs complete[/]"
        elif r.ok:
            stem = (RUN_REPORT.stem_of(Path(r.outputs[-1]).name) or "") if r.outputs else ""
            status = f"{stem}" + " ".join(o.removeprefix(stem) for o in r.outputs)
        else:
            status = f"[red]{r.error}[/]"
        spf = f"{r.seconds / r.frames:.3f}" if r.frames and r.seconds else "-"
        table.add_row(Path(r.name).name, str(r.frames or "-"), f"{r.seconds:.1f}" if r.seconds else "-", spf, status)
    console.print(table)


@dataclass(frozen=True)
class RunVideoArgs:
    """What run-video is given besides INPUT, the settings (a :class:`RunConfig`) and the reporting options."""

    input_video: str | None = arg(COMMAND_OPTIONS["input_video"])
    output_dir: Path = arg(COMMAND_OPTIONS["output_dir"], Path("output"))
    skip_existing: bool = arg(COMMAND_OPTIONS["skip_existing"], False)
    list_work: Path | None = arg(COMMAND_OPTIONS["list_work"])
    clean_work: Path | None = arg(COMMAND_OPTIONS["clean_work"])
    unload_snippet: bool | None = arg(COMMAND_OPTIONS["unload_snippet"])
    resample_method: str | None = arg(COMMAND_OPTIONS["resample_method"])


_INPUT = inspect.Parameter("input_path", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
    Optional[str], typer.Argument(metavar="INPUT", show_default=False, help="A video, a folder of videos, a .txt list "
                                  "of paths, or a folder / glob of images (frames of one video).")])


def run_video_params() -> list[Param]:
    """run-video's options as --help lists them: panel by panel (:data:`PANELS`), in each its own options first,
    then the preset, then the settings in the order of their declarations; the reporting options last."""
    from rollingdepth.runtime.run_config import run_options

    settings = [Param(name, option) for name, option in run_options().items()]
    ordered = [*params_of(RunVideoArgs), *(p for p in settings if p.name == "preset"),
               *(p for p in settings if p.name != "preset")]
    return sorted(ordered, key=lambda p: PANELS.index(p.panel or help_panel(p.option))) + params_of(Reporting)


@app.command(no_args_is_help=True)
@command_signature(run_video_params(), _INPUT)
def run_video(input_path: str | None = None, **values) -> None:
    """Predict temporally consistent depth (affine-invariant inverse depth) for videos with RollingDepth.

    Example: [bold]run-video input.mp4 --snippet-lengths 3 --dtype fp16[/]
    """
    from rollingdepth.runtime.heap import limit_heap_growth

    limit_heap_growth()
    args, shown = given(RunVideoArgs, values), given(Reporting, values)
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    report = make_reporter(shown, err)

    def fail(message: str, code: int = EXIT_USAGE):
        report.error(message)
        raise typer.Exit(code)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        report.warning(str(message))

    warnings.showwarning = show_warning
    if args.list_work is not None or args.clean_work is not None:
        _work_folders(args.list_work or args.clean_work, remove=args.clean_work is not None, out=out)
        return
    _stop_on_sigterm()
    if input_path and args.input_video and input_path != args.input_video:
        fail(f"give the input once: as INPUT or as {'/'.join(COMMAND_OPTIONS['input_video'].flags)}")
    source_spec = input_path or args.input_video
    if not source_spec:
        fail("no INPUT given (a video, a folder, a .txt list or a glob of images)")
    try:
        cfg, entries = _config_and_inputs(args, values, source_spec)
    except ValueError as exc:  # InputError is a ValueError
        fail(str(exc))
    output_dir, work_dir = args.output_dir, cfg.work_dir
    made: list[list[Path]] = []  # folders this command created: removed again when it wrote nothing there
    try:
        for name, folder in (("output_dir", output_dir), ("work_dir", Path(work_dir).expanduser() if work_dir else None)):
            try:
                if folder is not None:
                    made.append(_missing_folders(folder))
                    folder.mkdir(parents=True, exist_ok=True)
                    probe = folder / f".run-video-write-test-{os.getpid()}"  # one per process: ranks start together
                    probe.write_text("")
                    probe.unlink()
            except OSError as exc:
                fail(f"{spelling(name)} {folder}: cannot write there ({exc.strerror or exc})")
        all_results, interrupted, seconds, show = _run_all(entries, cfg, args, shown, report)
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # under a launcher another rank may be writing there
            for chain in made:
                _remove_empty(chain)
    if show:
        _summary(out, all_results)
        report.summary(all_results, seconds, interrupted)
    if interrupted:
        report.error("Interrupted. Finished videos are complete and no partial output file was left; "
                     "run the same command again to resume.")
        raise typer.Exit(EXIT_INTERRUPTED)
    if any(not r.ok for r in all_results):
        raise typer.Exit(EXIT_FAILED)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, deepest first."""
    missing = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; stop at the first that is not."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            return


def _config_and_inputs(args: RunVideoArgs, values: dict, source_spec: str):
    """The RunConfig (preset, then the settings given, parsed by their declarations) and the inputs."""
    from rollingdepth.io.video_io import open_source
    from rollingdepth.runtime.run_config import RunConfig, run_options

    settings = {name: option for name, option in run_options().items() if name != "preset"}
    overrides = {name: option.value(values[name]) for name, option in settings.items()}
    method = args.resample_method
    if method is not None and method.upper() != "BILINEAR":
        raise ValueError(f"{spelling('resample_method')}: only BILINEAR (antialiased) is implemented, got {method!r}")
    cfg = RunConfig.build(values["preset"], overrides)
    if cfg.device is not None:
        from rollingdepth.method.device import resolve_device

        resolve_device(cfg.device)
    return cfg, open_source(source_spec)


def _run_all(entries: list, cfg, args: RunVideoArgs, shown: Reporting, report: Reporter):
    """This process's share of the videos; returns (every rank's results, interrupted, seconds, show the summary)."""
    from rollingdepth.runtime.distributed import init_distributed

    output_dir, skip_existing = args.output_dir, args.skip_existing
    dist = init_distributed()
    interrupted, clean = False, False
    try:
        done = (lambda e: earlier_run(output_dir, _entry_stem(e), cfg)[0]) if skip_existing else (lambda e: False)
        share = _my_share(entries, dist, cfg, done)
        spread = {id(e): shots for e, shots in share}  # a video spread over the ranks: its shots
        mine, failed = _probe_inputs([e for e, _ in share], cfg, report, shown.verbose, done)
        if failed and not mine and not dist.enabled:  # every input is bad: no model, no summary
            raise typer.Exit(EXIT_USAGE)
        show = not shown.quiet and dist.is_main
        needed = any(source is not None for _, source in mine)
        started = time.time()
        count_done = None
        if dist.enabled:
            stems = [_entry_stem(e) for e in entries]
            count_done = lambda: sum(  # noqa: E731
                1 for st in stems if _finished_since(RUN_REPORT.path(output_dir, st), started))
        start_share(report, dist, len(entries) if dist.enabled else len(mine), len(mine), count_done)
        pipe = _load_model(cfg, dist, shown.verbose, report) if needed else None  # before any progress bar
        if dist.enabled:
            report.info(f"{dist.world_size} processes: {len(entries)} videos, balanced by frame count")
        if pipe is not None:
            _say_estimate(pipe, mine, cfg, report)
        batch = Batch(output_dir, cfg, dist, report, verbose=shown.verbose, skip_existing=skip_existing, pipe=pipe,
                      compare_settings=True, results=failed)
        with report:
            interrupted = run_batch([_item(e, source, cfg, spread.get(id(e))) for e, source in mine], batch)
        results = batch.results
        all_results = results if interrupted else [r for part in dist.all_gather(results) for r in part]
        clean = not interrupted
    finally:
        dist.close(barrier=clean)  # after an error or Ctrl-C, do not wait for the others
    return all_results, interrupted, time.time() - started, show


def _item(entry, source, cfg, spread=None) -> BatchItem:
    """An input of the batch, with its source opened by :func:`_probe_inputs` (None: one to skip);
    ``spread``: its shots when its units are spread over the ranks."""
    from rollingdepth.io.video_io import load_source

    return BatchItem(name=_entry_name(entry), stem=_entry_stem(entry),
                     open=lambda: source if source is not None else load_source(entry, strict=cfg.strict),
                     shared=spread)


def _entry_name(entry) -> str:
    return str(entry[0] if isinstance(entry, tuple) else entry)


def _probe_inputs(entries: list, cfg, report: Reporter, verbose: bool, done) -> tuple[list, list]:
    """Each input opened before the model loads: ``(entry, VideoSource)`` of the readable ones
    (``(entry, None)`` for those ``done(entry)`` says are skipped: not opened), and a failed
    ``VideoResult`` for each other one, which is said at once in one line (unreadable, empty,
    or truncated with ``--strict``; a truncated one otherwise warns here)."""
    from rollingdepth.runtime.outputs import VideoResult

    good, failed = [], []
    for entry in entries:
        try:
            good.append((entry, None if done(entry) else _opened(entry, cfg)))
            if (note := hdr_note(good[-1][1])) is not None:
                report.info(note, video=_entry_name(entry))
        except Exception as exc:  # the input's own error, in one line; the other inputs go on
            message = failure_message(exc)
            report.video_failed(_entry_name(entry), message, traceback.format_exc() if verbose else None)
            failed.append(VideoResult(name=_entry_name(entry), error=message))
    return good, failed


def _opened(entry, cfg):
    """The input's ``VideoSource``, with the cut list of ``--shots FILE`` read against it (its
    frame count and fps): a list that does not fit fails here, before the model loads."""
    from rollingdepth.io.video_io import load_source
    from rollingdepth.runtime.run_config import SHOT_MODES
    from rollingdepth.runtime.video_job import frames_to_process, listed_cuts

    source = load_source(entry, strict=cfg.strict)
    if cfg.shots not in SHOT_MODES:
        listed_cuts(source, cfg, frames_to_process(source, cfg))
    return source


def _stop_on_sigterm() -> None:
    """SIGTERM (a job scheduler's stop, a preemption) stops like Ctrl-C: files are closed, the
    work folder keeps what is complete, and the same command resumes."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _work_folders(folder: Path, remove: bool, out: Console) -> None:
    """``--list-work`` / ``--clean-work``: the work folders run-video left in ``folder``."""
    import shutil

    from rollingdepth.runtime.stores import work_folders

    found = work_folders(folder)
    if not found:
        out.print(f"no work folders of unfinished runs in {folder}")
        return
    for w in found:
        line = f"{w.path}  {w.bytes / 2**20:,.1f} MB  {w.age_s / 3600:.1f} h old  after {w.stage}  ({w.input})"
        if remove:
            shutil.rmtree(w.path)
            line = "removed " + line
        out.print(line, soft_wrap=True, highlight=False)


def _load_model(cfg, dist, verbose: bool, report: Reporter):
    """Load the checkpoint before any progress bar; when it cannot be, say so once and exit 2."""
    from rollingdepth.errors import CheckpointError
    from rollingdepth.runtime.loading import checkpoint_error_message

    report.info(f"loading checkpoint {cfg.checkpoint}")
    try:
        return load_model(cfg, dist)
    except CheckpointError as exc:
        report.error(checkpoint_error_message(exc, verbose), traceback=traceback.format_exc() if verbose else None)
        raise typer.Exit(EXIT_USAGE) from None


def _say_estimate(pipe, entries: list, cfg, report: Reporter) -> None:
    """One line before the first video: the run's estimated time (always on a CPU, elsewhere
    only when it is over a few minutes), with a lower --res to consider on a CPU; ``entries``
    are ``(entry, VideoSource or None for one to skip)`` pairs."""
    from rollingdepth.runtime.estimate import estimate_run

    videos = []
    for entry, source in entries:
        if source is None:  # skipped
            continue
        frames = source.frame_count - cfg.start_frame
        videos.append((min(frames, cfg.max_frames) if cfg.max_frames else frames, tuple(source.size)))
    try:
        line, seconds = estimate_run(pipe, videos, cfg.method_settings())
    except Exception as exc:  # an estimate must never stop a run
        report.warning(f"no time estimate ({type(exc).__name__}: {exc})")
        return
    if line and (pipe.unet.device.type == "cpu" or seconds > 180):
        report.info(line)


def _entry_stem(entry) -> str:
    return (entry[0].name or "frames") if isinstance(entry, tuple) else Path(entry).stem  # as VideoSource.stem


def _finished_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def _my_share(entries: list, dist, cfg, done) -> list[tuple]:
    """This process's videos, each with None (it runs whole here) or its shots (a ``ShotsState``:
    its units are spread over every rank): all of them whole without a launcher; else every
    video of several units (shots, or segments of a long shot), first, then a share of the
    others balanced by frame count. ``done(entry)``: its outputs are complete (``--skip-existing``)."""
    if not dist.enabled:
        return [(e, None) for e in entries]
    from rollingdepth.io.video_io import load_source
    from rollingdepth.runtime.distributed import balanced_shards
    from rollingdepth.runtime.video_job import spread_shots

    def probe(entry) -> tuple:
        try:
            source = load_source(entry)
            return source.frame_count, None if done(entry) else spread_shots(source, cfg)
        except Exception:  # the rank that gets it reports the error
            return 0, None

    probed = {}
    for part in dist.all_gather({i: probe(entries[i]) for i in range(dist.rank, len(entries), dist.world_size)}):
        probed.update(part)
    spread = [i for i in range(len(entries)) if probed[i][1] is not None]
    whole = [i for i in range(len(entries)) if probed[i][1] is None]
    shards = balanced_shards([probed[i][0] for i in whole], dist.world_size)
    return [(entries[i], probed[i][1]) for i in spread] + [(entries[whole[k]], None) for k in shards[dist.rank]]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``run-video``; also takes the original run_video.py's command line."""
    import typer.main

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        args = original_argv(args, typer.main.get_command(app))
    except ValueError as exc:
        Console(stderr=True, highlight=False, markup=False).print(f"Error: {exc}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    run_app(app, "run-video", args)


if __name__ == "__main__":
    main()
