"""The commands' own options, declared once, and the Typer options generated from declarations.

The settings' options are declared with their fields (:class:`~rollingdepth.method.settings.MethodSettings`,
:class:`~rollingdepth.runtime.run_config.RunConfig`), eval-depth's in :mod:`rollingdepth.evaluation.options`;
here are the options that belong to a command only (input, output folder, progress, ...).
:func:`command_signature` turns a list of declarations into the signature Typer reads, so a
command function states which options it takes, in which order, and nothing else.

How ``--help`` groups them is presentation, so it is decided here, not in the declarations: a
command's own option names its panel (:class:`CommandOption`); a setting's panel follows from what it
affects (:data:`SETTING_PANELS`, :func:`help_panel`); a command may put a declaration in a panel of
its own (:class:`Param`).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from rollingdepth._version import __version__
from rollingdepth.option_spec import Affects, Option
from rollingdepth.runtime.run_config import option_name

__all__ = ["COMMAND_OPTIONS", "CommandOption", "HELP_FLAGS", "PANELS", "Param", "Reporting", "SETTING_PANELS", "arg",
           "command_signature", "declared", "given", "help_panel", "params_of"]

INPUT, INFERENCE, DEVICE, OUTPUT, RUN = "Input", "Inference", "Device", "Output", "Run"  # run-video's help panels
ORIGINAL = "Accepted from the original run_video.py"  # options kept for its command lines, without effect
PANELS = (INPUT, INFERENCE, DEVICE, OUTPUT, RUN, ORIGINAL)  # in --help's order
# a setting's help panel, from what it affects (what compares it): what changes the depth, how it is computed,
# what the output files are and hold, how a run goes
SETTING_PANELS = {Affects.PREDICTION: INFERENCE, Affects.COMPUTATION: DEVICE, Affects.OUTPUT: OUTPUT,
                  Affects.FILES: OUTPUT, Affects.RUN: RUN}
HELP_FLAGS = ["-h", "--help"]


@dataclass(frozen=True)
class CommandOption(Option):
    """A command's own option (no setting), with the panel ``--help`` lists it in (None: Typer's "Options")."""

    panel: str | None = None


def help_panel(option: Option) -> str | None:
    """Where ``--help`` lists an option: a command's own option names its panel; a setting's follows from what
    it affects (:data:`SETTING_PANELS`); the preset, which sets the settings, with those that change the depth."""
    if isinstance(option, CommandOption):
        return option.panel
    if option.affects is not None:
        return SETTING_PANELS[option.affects]
    if option.name != option_name("preset"):
        raise ValueError(f"{option.name}: neither a setting nor a command's own option: give its help panel (Param)")
    return INFERENCE


def _version(value: bool):
    if value:
        typer.echo(f"rollingdepth {__version__}")
        raise typer.Exit()


COMMAND_OPTIONS: dict[str, CommandOption] = {
    "input_video": CommandOption(("-i", "--input-video"), "Same as INPUT.", "PATH", panel=INPUT),
    "output_dir": CommandOption(("-o", "--output-dir"), "Where outputs go.", "DIR", Path, panel=OUTPUT),
    "skip_existing": CommandOption(("--skip-existing",), "Skip videos whose outputs are complete (resume a batch).",
                                   None, bool, panel=RUN),
    "list_work": CommandOption(("--list-work",), f"List the work folders of unfinished runs in DIR (an output or "
                               f"{option_name('work_dir')} folder) with their size and age, and exit.", "DIR", Path,
                               panel=RUN),
    "clean_work": CommandOption(("--clean-work",), "Remove the work folders of unfinished runs in DIR (only those "
                                "run-video made), and exit.", "DIR", Path, panel=RUN),
    "unload_snippet": CommandOption(("--unload-snippet/--no-unload-snippet",), "Accepted for the original "
                                    "run_video.py; no effect (snippets always wait on the host and on disk).", None,
                                    bool, show_default=False, panel=ORIGINAL),
    "resample_method": CommandOption(("--resample-method",), "Accepted for the original run_video.py: frames are "
                                     "always resized with antialiased bilinear filtering.", "BILINEAR",
                                     panel=ORIGINAL),
    "quiet": CommandOption(("-q", "--quiet"), "Print only errors.", None, bool, panel=RUN),
    "progress": CommandOption(("--progress",), "Progress on stderr: live bars, plain lines (for logs), or JSON lines "
                              "(docs/progress.md); auto: bars on a terminal, else lines.", "auto|bar|lines|json",
                              panel=RUN),
    "log_every": CommandOption(("--log-every",), "With lines or json: at most one progress line per stage this often "
                               "(besides its start and end).", "SECONDS", float, panel=RUN),
    "verbose": CommandOption(("-v", "--verbose"), "Show tracebacks of errors.", None, bool, panel=RUN),
    "version": CommandOption(("--version",), "Print the version and exit.", None, bool, panel=RUN),
}
# what a command passes to Typer besides the declaration
_TYPER_EXTRA = {"version": {"callback": _version, "is_eager": True}}


class Param:
    """One parameter of a command: a declared option (``name``, ``option``) with this command's
    default and, where it differs from the declaration, its own help text or panel (else :func:`help_panel`)."""

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
                            rich_help_panel=self.panel or help_panel(option), **extra)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default,
                                 annotation=Annotated[annotation, info])


def declared(table: dict[str, Option], names, *, panel: str | None = None, **defaults) -> list[Param]:
    """Params for ``names`` from a table of declarations, with the defaults given (else None), in ``panel``
    if given (else :func:`help_panel`'s)."""
    return [Param(name, table[name], defaults.get(name), panel=panel) for name in names]


def command_signature(params: list, argument: inspect.Parameter | None = None) -> Callable:
    """Decorate a ``def command(**values)`` so that Typer reads ``params`` (and ``argument``,
    a positional ``typer.Argument`` first) as its options."""
    parameters = ([argument] if argument is not None else []) + [p.parameter() for p in params]

    def wrap(func: Callable) -> Callable:
        func.__signature__ = inspect.Signature(parameters)
        return func

    return wrap


# ----------------------------------------------------------------------------- a command's typed arguments
Args = TypeVar("Args")


def arg(option: Option, default=None, **shown):
    """A field of a command's arguments (a frozen dataclass): the option that gives it, with this command's
    ``default`` and, in ``shown``, its own help text or panel (:class:`Param`)."""
    metadata = {"option": option, "shown": shown}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def params_of(cls) -> list[Param]:
    """The Typer parameters of a command's arguments ``cls``, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append(Param(f.name, f.metadata["option"], default, **f.metadata["shown"]))
    return out


def given(cls: type[Args], values: dict) -> Args:
    """A command's arguments ``cls`` from the values Typer parsed (each field's by its name)."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Reporting:
    """How a command reports, as every command takes it: --quiet, --progress, --log-every, --verbose, --version."""

    quiet: bool = arg(COMMAND_OPTIONS["quiet"], False)
    progress: str = arg(COMMAND_OPTIONS["progress"], "auto")
    log_every: float = arg(COMMAND_OPTIONS["log_every"], 30.0)
    verbose: bool = arg(COMMAND_OPTIONS["verbose"], False)
    version: bool | None = arg(COMMAND_OPTIONS["version"])
