"""Command-line options that run-video and eval-depth share, declared once (Typer ``Annotated`` types)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["LogEvery", "Progress", "Quiet", "Verbose"]

_RUN = "Run"  # the help panel both commands show them in

Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.", rich_help_panel=_RUN)]
Progress = Annotated[str, typer.Option(
    "--progress", metavar="auto|bar|lines|json",
    help="Progress on stderr: live bars, plain lines (for logs), or JSON lines (docs/progress.md); "
         "auto: bars on a terminal, else lines.", rich_help_panel=_RUN)]
LogEvery = Annotated[float, typer.Option(
    "--log-every", metavar="SECONDS",
    help="With lines or json: at most one progress line per stage this often (besides its start and end).",
    rich_help_panel=_RUN)]
Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="Show tracebacks of errors.", rich_help_panel=_RUN)]
