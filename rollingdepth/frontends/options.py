"""The commands' own options, declared once, and the Typer options generated from declarations.

The settings' options are declared with their fields (:class:`~rollingdepth.method.settings.MethodSettings`,
:class:`~rollingdepth.runtime.run_config.RunConfig`), eval-depth's in :mod:`rollingdepth.evaluation.options`;
here are the options that belong to a command only (input, output folder, progress, ...).
:func:`command_signature` turns a list of declarations into the signature Typer reads, so a
command function states which options it takes, in which order, and nothing else.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from rollingdepth._version import __version__
from rollingdepth.option_spec import Option
from rollingdepth.runtime.run_config import option_name

__all__ = ["COMMAND_OPTIONS", "HELP_FLAGS", "Param", "command_signature", "declared"]

RUN = "Run"  # the help panel of the options that steer a run
HELP_FLAGS = ["-h", "--help"]


def _version(value: bool):
    if value:
        typer.echo(f"rollingdepth {__version__}")
        raise typer.Exit()


COMMAND_OPTIONS: dict[str, Option] = {
    "input_video": Option(("-i", "--input-video"), "Same as INPUT.", "PATH", "Input"),
    "output_dir": Option(("-o", "--output-dir"), "Where outputs go.", "DIR", "Output", Path),
    "skip_existing": Option(("--skip-existing",), "Skip videos whose outputs are complete (resume a batch).",
                            None, RUN, bool),
    "list_work": Option(("--list-work",), f"List the work folders of unfinished runs in DIR (an output or "
                        f"{option_name('work_dir')} folder) with their size and age, and exit.", "DIR", RUN, Path),
    "clean_work": Option(("--clean-work",), "Remove the work folders of unfinished runs in DIR (only those run-video "
                         "made), and exit.", "DIR", RUN, Path),
    "unload_snippet": Option(("--unload-snippet/--no-unload-snippet",), "Accepted for the original run_video.py; no "
                             "effect (snippets always wait on the host and on disk).", None, "Inference", bool,
                             show_default=False),
    "resample_method": Option(("--resample-method",), "Accepted for the original run_video.py: frames are always "
                              "resized with antialiased bilinear filtering.", "BILINEAR", "Inference"),
    "quiet": Option(("-q", "--quiet"), "Print only errors.", None, RUN, bool),
    "progress": Option(("--progress",), "Progress on stderr: live bars, plain lines (for logs), or JSON lines "
                       "(docs/progress.md); auto: bars on a terminal, else lines.", "auto|bar|lines|json", RUN),
    "log_every": Option(("--log-every",), "With lines or json: at most one progress line per stage this often "
                        "(besides its start and end).", "SECONDS", RUN, float),
    "verbose": Option(("-v", "--verbose"), "Show tracebacks of errors.", None, RUN, bool),
    "version": Option(("--version",), "Print the version and exit.", None, RUN, bool),
}
# what a command passes to Typer besides the declaration
_TYPER_EXTRA = {"version": {"callback": _version, "is_eager": True}}
# the options every command shows in its Run panel, with their defaults
REPORTING = (("quiet", False), ("progress", "auto"), ("log_every", 30.0), ("verbose", False), ("version", None))


class Param:
    """One parameter of a command: a declared option (``name``, ``option``) with this command's
    default and, where it differs from the declaration, its own help text or panel."""

    def __init__(self, name: str, option: Option, default=None, *, help: str | None = None,
                 panel: str | None = None, **typer_kw):
        self.name, self.option, self.default = name, option, default
        self.help, self.panel, self.typer_kw = help, panel, typer_kw

    def parameter(self) -> inspect.Parameter:
        option = self.option
        kind = list[str] if option.kind is list else option.kind
        annotation = Optional[kind] if self.default is None else kind
        extra = {"show_default": option.show_default, **_TYPER_EXTRA.get(self.name, {}), **self.typer_kw}
        info = typer.Option(*option.flags, metavar=option.metavar, help=self.help or option.help,
                            rich_help_panel=self.panel or option.panel, **extra)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default,
                                 annotation=Annotated[annotation, info])


def declared(table: dict[str, Option], names, **defaults) -> list[Param]:
    """Params for ``names`` from a table of declarations, with the defaults given (else None)."""
    return [Param(name, table[name], defaults.get(name)) for name in names]


def command_signature(params: list, argument: inspect.Parameter | None = None) -> Callable:
    """Decorate a ``def command(**values)`` so that Typer reads ``params`` (and ``argument``,
    a positional ``typer.Argument`` first) as its options."""
    parameters = ([argument] if argument is not None else []) + [p.parameter() for p in params]

    def wrap(func: Callable) -> Callable:
        func.__signature__ = inspect.Signature(parameters)
        return func

    return wrap


def reporting_params() -> list[Param]:
    """--quiet, --progress, --log-every, --verbose and --version, as every command takes them."""
    return [Param(name, COMMAND_OPTIONS[name], default) for name, default in REPORTING]
