"""``run-video``: depth for videos, folders of videos, lists of videos and image sequences.

A thin layer: it parses options, merges them over a preset, shows progress and a summary,
and leaves the work to :mod:`rollingdepth.runtime.video_job` and the pipeline.
"""

from __future__ import annotations

import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from rollingdepth._version import __version__
from rollingdepth.frontends.options import LogEvery, Progress, Quiet, Verbose
from rollingdepth.frontends.progress import Reporter, make_renderer, start_share

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

IN, MODEL, INFER, OUT, RUN = "Input", "Model", "Inference", "Output", "Run"


def _version(value: bool):
    if value:
        typer.echo(f"rollingdepth {__version__}")
        raise typer.Exit()


def _lengths(values: list[str] | None) -> list[int] | str | None:
    if values and [v.strip().lower() for v in values] == ["auto"]:
        return "auto"
    from rollingdepth.runtime.run_config import parse_numbers

    return parse_numbers(values, "--snippet-lengths")


def _spans(value: str | None) -> dict | None:
    """``"coarse=3,medium=3,fine=2"`` -> ``{"coarse": 3, "medium": 3, "fine": 2}``."""
    if not value:
        return None
    spans = {}
    for part in value.split(","):
        level, sep, k = part.partition("=")
        try:
            spans[level.strip()] = int(k)
        except ValueError:
            raise ValueError(f"--num-view-per-level: expected LEVEL=K pairs like fine=2, got {part!r}") from None
        if not sep:
            raise ValueError(f"--num-view-per-level: expected LEVEL=K pairs like fine=2, got {part!r}")
    return spans


def _strs(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [p for v in values for p in str(v).split(",") if p]


# ----------------------------------------------------------------------------- the original's command line
# The original run_video.py (argparse) took lists as space-separated values (nargs="+") and
# its on/off options as words (str2bool: --save-sbs false). main() rewrites such a command line
# into the forms declared here (repeated options, --no-save-sbs) before Typer parses it.
_INT_LISTS = ("-d", "--dilations", "--snippet-lengths", "--snip-len")
_FLOAT_LISTS = ("--depth-range",)
_NAME_LISTS = ("--cmap", "--color-maps")
_TRUE_WORDS = ("yes", "true", "t", "y", "1")
_FALSE_WORDS = ("no", "false", "f", "n", "0")
_OPTIONAL_INT = {"--save-ply": "1"}  # an option whose value may be left out, and what it then means


def _is_int_list(token: str) -> bool:
    return re.fullmatch(r"-?\d+(,-?\d+)*,?", token) is not None


def _is_float_list(token: str) -> bool:
    parts = [p for p in token.split(",") if p]
    try:
        [float(p) for p in parts]
    except ValueError:
        return False
    return bool(parts)


def _is_cmap_name(token: str) -> bool:
    """A matplotlib colour map name (or a comma list of them); an existing path is not one."""
    if token.startswith("-") or Path(token).exists():
        return False
    import matplotlib

    return all(p in matplotlib.colormaps for p in token.split(",") if p)


def _option_kinds(command) -> tuple[set[str], dict[str, str]]:
    """The options that take a value, and ``{on/off option: its off form}`` of the command."""
    takes_value, switches = set(), {}
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        if param.is_flag:
            if param.secondary_opts:
                for name in param.opts:
                    switches[name] = param.secondary_opts[0]
        else:
            takes_value.update(param.opts)
    return takes_value, switches


def original_argv(args: list[str], command=None) -> list[str]:
    """The original run_video.py's command line in this command's forms.

    ``-d 1 10 25`` -> ``-d 1 -d 10 -d 25`` (likewise ``--snippet-lengths``, ``--cmap``,
    ``--depth-range``); ``--save-sbs false`` -> ``--no-save-sbs`` and ``--save-sbs true`` ->
    ``--save-sbs`` for every on/off option; ``--save-ply`` without a number -> ``--save-ply 1``.
    A list stops at the first value that does not fit it, so ``-d 1 10 clip.mp4`` keeps
    clip.mp4 as INPUT. Raises ``ValueError`` naming the option for an on/off word it does not know.
    """
    import typer.main

    takes_value, switches = _option_kinds(command if command is not None else typer.main.get_command(app))
    lists = {**{o: _is_int_list for o in _INT_LISTS}, **{o: _is_float_list for o in _FLOAT_LISTS},
             **{o: _is_cmap_name for o in _NAME_LISTS}}
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out += args[i:]
            break
        name, eq, attached = token.partition("=") if token.startswith("--") else (token, "", "")
        if name in lists:
            values = [attached] if eq else args[i + 1 : i + 2]
            i += 1 if eq else 2
            while i < len(args) and lists[name](args[i]):
                values.append(args[i])
                i += 1
            out += [part for v in values for part in (name, v)] or [name]
            continue
        if name in switches:
            word = attached if eq else (args[i + 1] if i + 1 < len(args) and args[i + 1].lower() in _TRUE_WORDS + _FALSE_WORDS else None)
            i += 1 if eq or word is None else 2
            if word is not None and word.lower() not in _TRUE_WORDS + _FALSE_WORDS:
                raise ValueError(f"{name}: expected true or false, got {word!r}")
            out.append(switches[name] if word is not None and word.lower() in _FALSE_WORDS else name)
            continue
        if name in _OPTIONAL_INT and not eq:
            given = i + 1 < len(args) and args[i + 1].isdigit()
            out += [name, args[i + 1] if given else _OPTIONAL_INT[name]]
            i += 2 if given else 1
            continue
        if name in takes_value and not eq:  # its value is never an option nor INPUT
            out += args[i : i + 2]
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _reporter(progress: str, quiet: bool, log_every: float, err: Console) -> Reporter:
    """The progress and messages of a command (``--progress``, ``--log-every``, ``--quiet``);
    an invalid choice ends in one line and exit code 2."""
    try:
        return Reporter(make_renderer(progress, quiet, err, log_every=log_every))
    except ValueError as exc:
        from rich.markup import escape

        err.print(f"[red]Error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None


def _summary(console: Console, results) -> None:
    table = Table(title="run-video summary", show_lines=False)
    for col in ("video", "frames", "seconds", "s/frame", "outputs or error"):
        table.add_column(col, overflow="fold")
    for r in results:
        if r.skipped:
            status = "[dim]skipped: outputs complete[/]"
        elif r.ok:
            stem = Path(r.outputs[-1]).name.removesuffix("_run.json") if r.outputs else ""
            status = f"{stem}" + " ".join(o.removeprefix(stem) for o in r.outputs)
        else:
            status = f"[red]{r.error}[/]"
        spf = f"{r.seconds / r.frames:.3f}" if r.frames and r.seconds else "-"
        table.add_row(Path(r.name).name, str(r.frames or "-"), f"{r.seconds:.1f}" if r.seconds else "-", spf, status)
    console.print(table)


@app.command(no_args_is_help=True)
def run_video(
    input_path: Annotated[Optional[str], typer.Argument(
        metavar="INPUT", show_default=False,
        help="A video, a folder of videos, a .txt list of paths, or a folder / glob of images (frames of one video).")] = None,
    input_video: Annotated[Optional[str], typer.Option("-i", "--input-video", metavar="PATH", help="Same as INPUT.", rich_help_panel=IN)] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict/--no-strict", help="Fail a video whose file decodes fewer frames than its container declares (truncated); without it, a warning gives both numbers. (default: off)", rich_help_panel=IN, show_default=False)] = None,
    start_frame: Annotated[Optional[int], typer.Option("--from", "--start-frame", metavar="INT", help="Skip this many frames first.", rich_help_panel=IN)] = None,
    frame_count: Annotated[Optional[int], typer.Option("--frames", "--frame-count", metavar="INT", help="Process at most this many frames (0 = to the end).", rich_help_panel=IN)] = None,
    checkpoint: Annotated[Optional[str], typer.Option("-c", "--checkpoint", metavar="ID|PATH", help="Hub id or local folder. (default: prs-eth/rollingdepth-v1-0)", rich_help_panel=MODEL)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", "--data-type", metavar="fp16|bf16|fp32", help="fp16, bf16 or fp32 (fp16 becomes fp32 on CPU).", rich_help_panel=MODEL)] = None,
    device: Annotated[Optional[str], typer.Option("--device", metavar="NAME", help="cuda, cuda:1, mps or cpu. (default: best available)", rich_help_panel=MODEL)] = None,
    preset: Annotated[Optional[str], typer.Option("-p", "--preset", metavar="NAME|YAML", help="fast, fast1024, full, paper, none, or a YAML file; options given here win. (default: fast)", rich_help_panel=INFER)] = None,
    processing_res: Annotated[Optional[int], typer.Option("--res", "--processing-resolution", metavar="INT", help="Longer edge for processing; 0 keeps the size.", rich_help_panel=INFER)] = None,
    dilations: Annotated[Optional[list[str]], typer.Option("-d", "--dilations", metavar="D[,D..]", help="Snippet dilations, e.g. -d 1,10,25 or -d 1 10 25 or -d 1 -d 25; must include 1.", rich_help_panel=INFER)] = None,
    snippet_lengths: Annotated[Optional[list[str]], typer.Option("--snippet-lengths", "--snip-len", metavar="N[,N..]", help="Frames per snippet (num_view): one value, one per dilation (3,3,3 or 3 3 3), or auto (from motion and free memory).", rich_help_panel=INFER)] = None,
    num_view_per_level: Annotated[Optional[str], typer.Option("--num-view-per-level", metavar="LEVEL=K,..", help="Experimental: attention span per UNet level, e.g. coarse=3,medium=3,fine=2 (frames attend to frames less than K apart).", rich_help_panel=INFER)] = None,
    cap_dilation: Annotated[Optional[bool], typer.Option("--cap-dilation/--no-cap-dilation", help="Shrink dilations that do not fit short videos.", rich_help_panel=INFER, show_default=False)] = None,
    refine_step: Annotated[Optional[int], typer.Option("--refine-step", metavar="INT", help="Coarse-to-fine refinement steps (0 = none).", rich_help_panel=INFER)] = None,
    refine_snippet_len: Annotated[Optional[int], typer.Option("--refine-snippet-len", "--refine-snippet-length", metavar="INT", help="Snippet length during refinement.", rich_help_panel=INFER)] = None,
    refine_start_dilation: Annotated[Optional[int], typer.Option("--refine-start-dilation", metavar="INT", help="First refinement dilation.", rich_help_panel=INFER)] = None,
    coalign: Annotated[Optional[str], typer.Option("--coalign", metavar="fast|reference", help="Co-alignment solver: fast or reference.", rich_help_panel=INFER)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", metavar="INT", help="Seed of the initial noise. (default: 0)", rich_help_panel=INFER)] = None,
    max_vae_bs: Annotated[Optional[int], typer.Option("--max-vae-bs", metavar="INT", help="Frames per VAE call. (default: 4)", rich_help_panel=INFER)] = None,
    unet_batch_size: Annotated[Optional[int], typer.Option("--unet-batch-size", metavar="INT", help="Snippets per UNet call. (default: from free memory)", rich_help_panel=INFER)] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the UNet and VAE (slow start, faster on long runs). (default: off)", rich_help_panel=MODEL, show_default=False)] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format for the UNet and VAE. (default: off)", rich_help_panel=MODEL, show_default=False)] = None,
    tf32: Annotated[Optional[bool], typer.Option("--tf32/--no-tf32", help="TF32 matmuls on Ampere and newer GPUs. (default: on)", rich_help_panel=MODEL, show_default=False)] = None,
    output_dir: Annotated[Path, typer.Option("-o", "--output-dir", metavar="DIR", help="Where outputs go.", rich_help_panel=OUT)] = Path("output"),
    work_dir: Annotated[Optional[str], typer.Option("--work-dir", metavar="DIR", help="Where a run keeps its intermediate results (decoded snippets: about 4 MB per frame at 768x432 in fp16), e.g. a fast local disk. (default: the output folder)", rich_help_panel=RUN)] = None,
    output_fps: Annotated[Optional[float], typer.Option("--fps", "--output-fps", metavar="FPS", help="Frame rate of output videos (0 = the input's).", rich_help_panel=OUT)] = None,
    restore_res: Annotated[Optional[bool], typer.Option("--restore-res/--no-restore-res", "--restore-resolution", help="Outputs at the input's size (also --restore-res true|false).", rich_help_panel=OUT, show_default=False)] = None,
    cmap: Annotated[Optional[list[str]], typer.Option("--cmap", "--color-maps", metavar="NAME[,NAME..]", help="Colour maps (matplotlib names), one video each; NAME,NAME or NAME NAME. (default: Spectral_r, Greys_r)", rich_help_panel=OUT)] = None,
    save_npy: Annotated[Optional[bool], typer.Option("--save-npy/--no-save-npy", help="{stem}_pred.npy, float32 [N, H, W]. (default: on)", rich_help_panel=OUT, show_default=False)] = None,
    save_sbs: Annotated[Optional[bool], typer.Option("--save-sbs/--no-save-sbs", "--save-side-by-side", help="{stem}_rgbd.mp4, input and depth side by side; also --save-sbs true|false, like every on/off option. (default: on)", rich_help_panel=OUT, show_default=False)] = None,
    save_snippets: Annotated[Optional[bool], typer.Option("--save-snippets/--no-save-snippets", help="{stem}_snippets.npz. (default: off)", rich_help_panel=OUT, show_default=False)] = None,
    save_png16: Annotated[Optional[bool], typer.Option("--save-png16/--no-save-png16", help="{stem}_depth16/000000.png ..., 16-bit PNG per frame; range in run.json (png16_range). (default: off)", rich_help_panel=OUT, show_default=False)] = None,
    save_exr: Annotated[Optional[bool], typer.Option("--save-exr/--no-save-exr", help="{stem}_exr/000000.exr ..., float32 EXR per frame, channel Z (needs pip install 'rollingdepth\\[exr]'). (default: off)", rich_help_panel=OUT, show_default=False)] = None,
    depth_out: Annotated[Optional[str], typer.Option("--depth-out", metavar="inverse|depth", help="What npy, EXR, PNG16 and PLY hold: inverse = the prediction (affine-invariant inverse depth, near = large); depth = mapped onto --depth-range, one mapping for the whole video. (default: inverse)", rich_help_panel=OUT)] = None,
    depth_range: Annotated[Optional[list[str]], typer.Option("--depth-range", metavar="NEAR,FAR", help="With --depth-out depth: the depth of the nearest and farthest point of the video, in your units (e.g. 0.5,20).", rich_help_panel=OUT)] = None,
    save_ply: Annotated[Optional[int], typer.Option("--save-ply", metavar="[EVERY]", help="{stem}_ply/000000.ply ..., coloured point cloud (binary PLY) of every EVERY-th frame (default 1: all); needs --depth-out depth.", rich_help_panel=OUT, show_default=False)] = None,
    fov: Annotated[Optional[float], typer.Option("--fov", metavar="DEG", help="Horizontal field of view of the point clouds' pinhole camera. (default: 60)", rich_help_panel=OUT)] = None,
    focal: Annotated[Optional[float], typer.Option("--focal", metavar="PX", help="Or its focal length in pixels of the input video (scaled to the output size).", rich_help_panel=OUT)] = None,
    ply_stride: Annotated[Optional[int], typer.Option("--ply-stride", metavar="PX", help="One point every PX pixels in rows and columns. (default: 2)", rich_help_panel=OUT)] = None,
    unload_snippet: Annotated[Optional[bool], typer.Option("--unload-snippet/--no-unload-snippet", help="Accepted for the original run_video.py; no effect (snippets always wait on the host and on disk).", rich_help_panel=INFER, show_default=False)] = None,
    resample_method: Annotated[Optional[str], typer.Option("--resample-method", metavar="BILINEAR", help="Accepted for the original run_video.py: frames are always resized with antialiased bilinear filtering.", rich_help_panel=INFER)] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--restart", help="Continue an unfinished run of the same video and settings from its work folder, or discard that folder and start over. (default: resume)", rich_help_panel=RUN, show_default=False)] = None,
    list_work: Annotated[Optional[Path], typer.Option("--list-work", metavar="DIR", help="List the work folders of unfinished runs in DIR (an output or --work-dir folder) with their size and age, and exit.", rich_help_panel=RUN)] = None,
    clean_work: Annotated[Optional[Path], typer.Option("--clean-work", metavar="DIR", help="Remove the work folders of unfinished runs in DIR (only those run-video made), and exit.", rich_help_panel=RUN)] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip videos whose outputs are complete (resume a batch).", rich_help_panel=RUN)] = False,
    quiet: Quiet = False,
    progress: Progress = "auto",
    log_every: LogEvery = 30.0,
    verbose: Verbose = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.", rich_help_panel=RUN)] = None,
) -> None:
    """Predict temporally consistent depth (affine-invariant inverse depth) for videos with RollingDepth.

    Example: [bold]run-video input.mp4 --snippet-lengths 3 --dtype fp16[/]
    """
    from rollingdepth.runtime.run_config import RunConfig, parse_numbers
    from rollingdepth.runtime.distributed import init_distributed
    from rollingdepth.method.device import limit_heap_growth
    from rollingdepth.io.video_io import open_source

    limit_heap_growth()

    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    report = _reporter(progress, quiet, log_every, err)

    def fail(message: str, code: int = EXIT_USAGE):
        report.error(message)
        raise typer.Exit(code)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        report.warning(str(message))

    warnings.showwarning = show_warning
    if list_work is not None or clean_work is not None:
        _work_folders(list_work or clean_work, remove=clean_work is not None, out=out)
        return
    _stop_on_sigterm()

    if input_path and input_video and input_path != input_video:
        fail("give the input once: as INPUT or as -i/--input-video")
    source_spec = input_path or input_video
    if not source_spec:
        fail("no INPUT given (a video, a folder, a .txt list or a glob of images)")
    try:
        overrides = dict(
            checkpoint=checkpoint, processing_res=processing_res, dilations=parse_numbers(dilations, "--dilations"),
            snippet_lengths=_lengths(snippet_lengths), attn_span=_spans(num_view_per_level), cap_dilation=cap_dilation,
            refine_step=refine_step, refine_snippet_len=refine_snippet_len,
            refine_start_dilation=refine_start_dilation, dtype=dtype, device=device, seed=seed,
            max_vae_bs=max_vae_bs, unet_batch_size=unet_batch_size, coalign=coalign,
            start_frame=start_frame, frame_count=frame_count, output_fps=output_fps,
            restore_res=restore_res, cmaps=_strs(cmap), save_npy=save_npy, save_sbs=save_sbs,
            save_snippets=save_snippets, save_png16=save_png16, compile=compile,
            channels_last=channels_last, tf32=tf32, work_dir=work_dir, resume=resume, strict=strict,
            save_exr=save_exr, depth_out=depth_out, depth_range=parse_numbers(depth_range, "--depth-range", float),
            save_ply=save_ply, fov=fov, focal=focal, ply_stride=ply_stride,
        )
        if resample_method is not None and resample_method.upper() != "BILINEAR":
            raise ValueError(f"--resample-method: only BILINEAR (antialiased) is implemented, got {resample_method!r}")
        cfg = RunConfig.build(preset, overrides)
        if cfg.device is not None:
            from rollingdepth.method.device import resolve_device

            resolve_device(cfg.device)
        entries = open_source(source_spec)
    except ValueError as exc:  # InputError is a ValueError
        fail(str(exc))

    for option, folder in (("--output-dir", output_dir), ("--work-dir", Path(work_dir).expanduser() if work_dir else None)):
        try:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / ".run-video-write-test"
                probe.write_text("")
                probe.unlink()
        except OSError as exc:
            fail(f"{option} {folder}: cannot write there ({exc.strerror or exc})")

    dist = init_distributed()
    interrupted, clean = False, False
    try:
        mine = _my_share(entries, dist)
        show = not quiet and dist.is_main
        needed = _needs_model(mine, output_dir, cfg, skip_existing)
        started = time.time()
        count_done = None
        if dist.enabled:
            stems = [_entry_stem(e) for e in entries]
            count_done = lambda: sum(  # noqa: E731
                1 for st in stems if _finished_since(output_dir / f"{st}_run.json", started))
        start_share(report, dist, len(entries), len(mine), count_done)
        pipe = _load_model(cfg, dist, verbose, report) if needed else None  # before any progress bar
        if dist.enabled:
            report.info(f"{dist.world_size} processes: {len(entries)} videos, balanced by frame count")
        if pipe is not None:
            _say_estimate(pipe, mine, output_dir, cfg, skip_existing, report)
        results, interrupted = _process_all(mine, output_dir, cfg, dist, skip_existing, verbose, report, pipe)
        all_results = results if interrupted else [r for part in dist.all_gather(results) for r in part]
        clean = not interrupted
    finally:
        dist.close(barrier=clean)  # after an error or Ctrl-C, do not wait for the others

    if show:
        _summary(out, all_results)
        report.summary(all_results, time.time() - started, interrupted)
    if interrupted:
        report.error("Interrupted. Finished videos are complete and no partial output file was left; "
                     "run the same command again to resume.")
        raise typer.Exit(EXIT_INTERRUPTED)
    if any(not r.ok for r in all_results):
        raise typer.Exit(EXIT_FAILED)


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
        age = w["age_s"] / 3600
        line = f"{w['path']}  {w['bytes'] / 2**20:,.1f} MB  {age:.1f} h old  after {w['stage']}  ({w['input']})"
        if remove:
            shutil.rmtree(w["path"])
            line = "removed " + line
        out.print(line, soft_wrap=True, highlight=False)


def _needs_model(entries: list, output_dir: Path, cfg, skip_existing: bool) -> bool:
    """Whether any video will be predicted (with --skip-existing, complete outputs need no model)."""
    from rollingdepth.runtime.video_job import outputs_complete

    if not skip_existing:
        return bool(entries)
    return not all(outputs_complete(output_dir, _entry_stem(e), cfg) for e in entries)


def _load_model(cfg, dist, verbose: bool, report: Reporter):
    """Load the checkpoint before any progress bar; when it cannot be, say so once and exit 2."""
    from rollingdepth.method.loading import CheckpointError, checkpoint_error_message, load_pipeline

    report.info(f"loading checkpoint {cfg.checkpoint}")
    try:
        pipe = load_pipeline(cfg.checkpoint, cfg.dtype, dist.device(cfg.device), compile=cfg.compile,
                             channels_last=cfg.channels_last, tf32=cfg.tf32)
    except CheckpointError as exc:
        report.error(checkpoint_error_message(exc, verbose), traceback=traceback.format_exc() if verbose else None)
        raise typer.Exit(EXIT_USAGE) from None
    return pipe


def _say_estimate(pipe, entries: list, output_dir: Path, cfg, skip_existing: bool, report: Reporter) -> None:
    """One line before the first video: the run's estimated time (always on a CPU, elsewhere
    only when it is over a few minutes), with a lower --res to consider on a CPU."""
    from rollingdepth.runtime.estimate import estimate_run
    from rollingdepth.runtime.video_job import outputs_complete
    from rollingdepth.io.video_io import load_source

    videos = []
    for entry in entries:
        if skip_existing and outputs_complete(output_dir, _entry_stem(entry), cfg):
            continue
        try:
            source = load_source(entry)
        except Exception:  # the video's own run reports it
            continue
        frames = source.frame_count - cfg.start_frame
        videos.append((min(frames, cfg.frame_count) if cfg.frame_count else frames, tuple(source.size)))
    try:
        line, seconds = estimate_run(pipe, videos, cfg.method_settings())
    except Exception as exc:  # an estimate must never stop a run
        report.warning(f"no time estimate ({type(exc).__name__}: {exc})")
        return
    if line and (pipe.unet.device.type == "cpu" or seconds > 180):
        report.info(line)


def _entry_stem(entry) -> str:
    return entry[0].name if isinstance(entry, tuple) else Path(entry).stem


def _finished_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def _my_share(entries: list, dist) -> list:
    """This process's videos: all of them, or a share balanced by frame count."""
    if not dist.enabled:
        return entries
    from rollingdepth.runtime.distributed import balanced_shards
    from rollingdepth.io.video_io import load_source

    def frames(entry) -> int:
        try:
            return load_source(entry).frame_count
        except Exception:  # the rank that gets it reports the error
            return 0

    probed = {i: frames(entries[i]) for i in range(dist.rank, len(entries), dist.world_size)}
    counts = {}
    for part in dist.all_gather(probed):
        counts.update(part)
    shards = balanced_shards([counts[i] for i in range(len(entries))], dist.world_size)
    return [entries[i] for i in shards[dist.rank]]


def _process_all(entries, output_dir, cfg, dist, skip_existing, verbose, report: Reporter, pipe=None):
    """Run every video of this process with ``pipe`` (loaded here if None); return the results and
    whether Ctrl-C stopped it. Progress and errors go to ``report``.

    A video's outputs are written in a background thread while the next video's prediction
    runs (at most one video waits to be written).
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rollingdepth.runtime.video_job import VideoResult, load_pipeline, outputs_complete, predict_video
    from rollingdepth.io.video_io import InputError, load_source

    results: list = []
    cancel = threading.Event()
    writing = None  # (index in results, future) of the video being written

    def failed(name: str, exc: BaseException, trace: str | None = None) -> VideoResult:
        message = str(exc) if isinstance(exc, (InputError, ValueError)) else f"{type(exc).__name__}: {exc}"
        message = " ".join(message.split()) or type(exc).__name__
        report.video_failed(name, message, trace if verbose else None)
        return VideoResult(name=name, error=message)

    def collect() -> None:
        """Wait for the video being written and record how it went."""
        nonlocal writing
        if writing is None:
            return
        slot, future = writing
        name = results[slot].name
        try:
            result = future.result()
            result.name = name
            results[slot] = result
            report.end_stage(name)
            report.video_done(name, result.frames, result.seconds, result.outputs)
        except KeyboardInterrupt:
            if not future.done():
                raise  # Ctrl-C while waiting: the caller cancels the writing and collects again
            results[slot] = VideoResult(name=name, error="interrupted")
            writing = None
            raise
        except Exception as exc:
            results[slot] = failed(name, exc, "".join(traceback.format_exception(exc)))
        writing = None

    with report, ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollingdepth-outputs") as pool:
        try:
            for entry in entries:
                name = str(entry[0] if isinstance(entry, tuple) else entry)
                report.video_start(name)
                progress = report.callback(name)
                try:
                    source = load_source(entry, strict=cfg.strict)
                    if skip_existing and outputs_complete(output_dir, source.stem, cfg):
                        results.append(VideoResult(name=name, skipped=True))
                        report.video_skipped(name, "outputs complete")
                        continue
                    if pipe is None:  # run_video loads it first; here only if its --skip-existing guess missed
                        progress("load", 0, 1)
                        pipe = load_pipeline(cfg.checkpoint, cfg.dtype, dist.device(cfg.device), compile=cfg.compile,
                                             channels_last=cfg.channels_last, tf32=cfg.tf32)
                    extra = {"rank": dist.rank, "world_size": dist.world_size} if dist.enabled else {}
                    pending = predict_video(pipe, source, output_dir, cfg, progress, extra)
                except KeyboardInterrupt:
                    results.append(VideoResult(name=name, error="interrupted"))
                    raise
                except Exception as exc:  # one failing video does not stop the others
                    results.append(failed(name, exc, traceback.format_exc()))
                    continue
                report.end_stage(name)  # the prediction is over; the video counts once written
                for note in pending.notes:
                    report.info(note, video=name)
                try:
                    collect()  # the previous video's outputs
                except KeyboardInterrupt:
                    pending.discard()
                    results.append(VideoResult(name=name, error="interrupted"))
                    raise
                results.append(VideoResult(name=name))
                report.mark(name)  # its writing starts now
                writing = (len(results) - 1, pool.submit(pending.write, progress, cancel))
            collect()
        except KeyboardInterrupt:
            cancel.set()  # the video being written stops at its next frame and removes its partial files
            try:
                collect()
            except KeyboardInterrupt:
                pass
            return results, True
    return results, False


def run_app(typer_app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a Typer app; usage errors become one line and exit code 2, Ctrl-C exits 130."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = typer_app(args=args, prog_name=prog_name, standalone_mode=False)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        Console(stderr=True).print("[red]Interrupted.[/]")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # click's usage errors (typer vendors its own click in recent releases: match the shape)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = " ".join(exc.format_message().split())
            Console(stderr=True, highlight=False).print(f"[red]Error:[/] {message}", soft_wrap=True)
            sys.exit(exc.exit_code or EXIT_USAGE)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``run-video``; also takes the original run_video.py's command line."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        args = original_argv(args)
    except ValueError as exc:
        Console(stderr=True, highlight=False, markup=False).print(f"Error: {exc}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    run_app(app, "run-video", args)


if __name__ == "__main__":
    main()
