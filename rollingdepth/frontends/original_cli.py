"""The original run_video.py's command line, in the forms the commands declare.

The original (argparse) took lists as space-separated values (``nargs="+"``) and its on/off
options as words (``str2bool``: ``--save-sbs false``). :func:`original_argv` rewrites such a
command line into the forms a command declares (repeated options, ``--no-save-sbs``) before
Typer parses it; which options take lists, of what (``Option.list_form``), and which may leave their
value out (``Option.bare``) is declared with the settings. ``run-video`` and ``eval-depth`` use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from rollingdepth.option_spec import ListForm

if TYPE_CHECKING:
    import click

_TRUE_WORDS = ("yes", "true", "t", "y", "1")
_FALSE_WORDS = ("no", "false", "f", "n", "0")


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


def _option_kinds(command: click.Command) -> tuple[set[str], dict[str, str]]:
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


def original_argv(args: list[str], command: click.Command) -> list[str]:
    """The original run_video.py's command line in the forms of ``command`` (a Typer app's click command).

    ``-d 1 10 25`` -> ``-d 1 -d 10 -d 25`` (likewise ``--snippet-lengths``, ``--cmap``,
    ``--depth-range``); ``--save-sbs false`` -> ``--no-save-sbs`` and ``--save-sbs true`` ->
    ``--save-sbs`` for every on/off option; ``--save-ply`` without a number -> ``--save-ply 1``.
    A list stops at the first value that does not fit it, so ``-d 1 10 clip.mp4`` keeps
    clip.mp4 as INPUT. Raises ``ValueError`` naming the option for an on/off word it does not know.
    """
    from rollingdepth.runtime.run_config import run_options

    takes_value, switches = _option_kinds(command)

    declared = run_options().values()
    tests = {ListForm.INTS: _is_int_list, ListForm.NUMBERS: _is_float_list, ListForm.NAMES: _is_cmap_name}
    lists = {flag: tests[option.list_form] for option in declared if option.list_form for flag in option.flags}
    optional = {flag: option.bare for option in declared if option.bare is not None for flag in option.flags}
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
        if name in optional and not eq:
            given = i + 1 < len(args) and args[i + 1].isdigit()
            out += [name, args[i + 1] if given else optional[name]]
            i += 2 if given else 1
            continue
        if name in takes_value and not eq:  # its value is never an option nor INPUT
            out += args[i : i + 2]
            i += 2
            continue
        out.append(token)
        i += 1
    return out
