"""``stereo-video``: the stereo 3D videos of a finished run again, without the model.

    stereo-video output/clip_pred.npy --save-stereo half-sbs --stereo-strength 3.5
    stereo-video output/clip_pred.npy --save-stereo full-sbs,anaglyph --convergence 1 -o stereo/

Reads ``{stem}_pred.npy`` and ``{stem}_run.json`` (the frames and shots it covers), decodes the
input again (the one run.json names, or ``--input``) and writes the videos as ``run-video
--save-stereo`` does (:mod:`rollingdepth.runtime.rerender`).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rollingdepth.errors import InputError
from rollingdepth.frontends.command import EXIT_FAILED, EXIT_USAGE, run_app
from rollingdepth.frontends.options import COMMAND_OPTIONS, HELP_FLAGS, Param, arg, command_signature, given, params_of
from rollingdepth.io.output_formats import RUN_REPORT, output_format
from rollingdepth.runtime.run_config import RunConfig, run_options

app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  context_settings={"help_option_names": HELP_FLAGS})

_PRED = Annotated[Path, typer.Argument(metavar="PRED", show_default=False, help=(
    f"A run-video prediction, {output_format('npy').files}, with its {RUN_REPORT.files} beside it."))]


@dataclass(frozen=True)
class StereoVideoArgs:
    """What stereo-video is given besides PRED and the stereo settings (:class:`RunConfig`'s)."""

    input_video: str | None = arg(COMMAND_OPTIONS["input_video"], help="The video (or image folder) the prediction "
                                  "was made from. (default: the input its run.json names)")
    output_dir: Path | None = arg(COMMAND_OPTIONS["output_dir"], help="Where the videos go. (default: the "
                                  "prediction's folder)")
    quiet: bool = arg(COMMAND_OPTIONS["quiet"], False)


SETTINGS = ("save_stereo", "stereo_strength", "convergence", "audio")  # the run settings it takes, as run-video spells them


def _params() -> list[Param]:
    """Its own options, then the stereo settings (--help groups them by panel)."""
    settings = run_options()
    stereo = settings["save_stereo"]
    return [*params_of(StereoVideoArgs), Param("save_stereo", stereo, ["half-sbs"], show_default=False,
                                               help=stereo.help.replace("(default: none)", "(default: half-sbs)")),
            *(Param(name, settings[name], getattr(RunConfig, name)) for name in SETTINGS[1:])]


@app.command(no_args_is_help=True)
@command_signature(_params(), inspect.Parameter("pred", inspect.Parameter.KEYWORD_ONLY, annotation=_PRED))
def stereo_video(pred: Path, **values) -> None:
    """Make the stereo 3D videos of a finished run-video prediction again (another layout, strength or
    convergence), without the model."""
    from rollingdepth.runtime.rerender import FinishedRun, stereo_again

    args, err, settings = given(StereoVideoArgs, values), Console(stderr=True, highlight=False), run_options()
    try:
        cfg = RunConfig.build(None, {name: settings[name].value(values[name]) for name in SETTINGS})
    except ValueError as exc:
        err.print(f"[red]Error:[/] {exc}", soft_wrap=True, markup=True)
        raise typer.Exit(EXIT_USAGE)
    started = time.perf_counter()
    try:
        run = FinishedRun(pred, args.input_video)
        out_dir = Path(args.output_dir or run.prediction.parent)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = stereo_again(run, cfg, out_dir)
    except (InputError, OSError) as exc:
        err.print(f"Error: {exc}", soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_FAILED)
    if not args.quiet:
        Console(highlight=False).print(f"{len(run.values)} frames in {time.perf_counter() - started:.1f} s: "
                                       + ", ".join(str(p) for p in written), soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``stereo-video``."""
    run_app(app, "stereo-video", argv)


if __name__ == "__main__":
    main()
