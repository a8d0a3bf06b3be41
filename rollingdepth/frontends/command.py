"""What the commands share: exit codes, the reporter of ``--progress``/``--quiet``/``--log-every``,
the spelling of an option in messages, and running a Typer app with usage errors in one line.

``run-video``, ``eval-depth``, ``stereo-video`` and ``rollingdepth-app`` import these from here;
no command module imports another.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from rollingdepth.frontends.options import COMMAND_OPTIONS, Reporting
from rollingdepth.frontends.progress import Reporter, make_renderer
from rollingdepth.option_spec import Option

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "hdr_note", "make_reporter", "run_app", "spelling", "usage_error"]

EXIT_FAILED = 1  # an input or a video failed
EXIT_USAGE = 2  # a wrong option or value: nothing ran
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


def make_reporter(reporting: Reporting, err: Console) -> Reporter:
    """The progress and messages of a command (``--progress``, ``--log-every``, ``--quiet``);
    an invalid choice ends in one line and exit code 2."""
    try:
        return Reporter(make_renderer(reporting.progress, reporting.quiet, err, log_every=reporting.log_every))
    except ValueError as exc:
        from rich.markup import escape

        err.print(f"[red]Error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None


def spelling(name: str, table: dict[str, Option] = COMMAND_OPTIONS) -> str:
    """The option of ``name`` in messages: its declaration in ``table`` (the command's own
    options), else the setting's (``runtime.run_config.option_name``)."""
    from rollingdepth.runtime.run_config import option_name

    return table[name].name if name in table else option_name(name)


def usage_error(exc: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` of click's usage errors, None for any other exception.

    Typer vendors its own click in recent releases: matched by shape, not by class."""
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        return " ".join(exc.format_message().split()), exc.exit_code or EXIT_USAGE
    return None


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
        usage = usage_error(exc)
        if usage is None:
            raise
        Console(stderr=True, highlight=False).print(f"[red]Error:[/] {usage[0]}", soft_wrap=True)
        sys.exit(usage[1])
    sys.exit(code if isinstance(code, int) else 0)


def hdr_note(source) -> str | None:
    """The one line said of an HDR source (PQ or HLG, from its headers), else None."""
    picture = getattr(source, "picture", None)
    if picture is None or picture.hdr is None:
        return None
    return (f"{source.stem}: an HDR source ({picture.hdr}, {picture.bit_depth}-bit): read as SDR without tone mapping, "
            f"so its colours look washed out in the side-by-side video; depth is computed from it all the same")
