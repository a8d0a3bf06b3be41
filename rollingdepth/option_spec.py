"""How an option is declared: once, beside the setting it sets.

An :class:`Option` holds an option's command-line spellings, metavar, help text, how its typed
text becomes the setting's value and, for a setting, what it affects (:class:`Affects`: what
compares it) and how its list reads when typed apart (:class:`ListForm`). Dataclass fields carry
theirs in ``metadata["option"]`` (:func:`opt`); the front ends generate their Typer options and
error names from these declarations, and library code asks
``rollingdepth.runtime.run_config.option_name(field)`` for a spelling instead of writing it.
How a front end presents an option is its own: ``--help`` derives a setting's panel from what it
affects, the web page names its controls (``rollingdepth.frontends.options``, ``.app``).
This module holds no spelling itself and imports nothing from the package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

__all__ = ["Affects", "ListForm", "Option", "affecting", "opt", "options_of", "parse_names", "parse_numbers",
           "parse_spans", "unclassified"]


class Affects(Enum):
    """What a setting changes, which says what compares it."""

    PREDICTION = "prediction"  # the depth predicted: a resume's journal, --skip-existing and eval-depth's folder compare it
    COMPUTATION = "computation"  # how it is computed (device, batch sizes), the same up to rounding: a resume's journal
    OUTPUT = "output"  # what the output files hold of a prediction: --skip-existing compares it
    FILES = "files"  # which output files are written: --skip-existing looks for them (outputs_complete), no comparison
    RUN = "run"  # how a run goes, not what it makes (folders, compiling, checks): nothing compares it


class ListForm(Enum):
    """What the values of a list option are, typed apart as the original run_video.py took them (``-d 1 10 25``)."""

    INTS = "ints"
    NUMBERS = "numbers"
    NAMES = "names"  # colour map names


@dataclass(frozen=True)
class Option:
    """One option. ``flags``: its spellings, the first one used in messages (``"--a/--no-a"``
    for an on/off option, whose off form is then ``--no-a``); ``kind``: what the command line
    types (``int``, ``float``, ``str``, ``bool``, ``list``: a repeatable text option);
    ``parse(value, spelling)``: that text as the setting's value. A setting's option also says
    what it ``affects``; ``planned``: ``--skip-existing`` compares the value the run uses (after
    planning, as run.json records it: capped dilations, the dtype a CPU runs), not the one given;
    ``list_form``: a list option's values; ``bare``: the value of the option given without one."""

    flags: tuple[str, ...]
    help: str = ""
    metavar: str | None = None
    kind: type = str
    parse: Callable[[Any, str], Any] | None = None
    show_default: bool = True
    affects: Affects | None = None  # None: not a setting (a command's own option)
    planned: bool = False
    list_form: ListForm | None = None
    bare: str | None = None

    @property
    def name(self) -> str:
        """The spelling in messages: the first long flag (its on form for an on/off option)."""
        first = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return first.split("/")[0]

    @property
    def off(self) -> str | None:
        """The off form of an on/off option (``--no-save-sbs``, ``--restart``), else None."""
        for flag in self.flags:
            if "/" in flag:
                return flag.split("/")[1]
        return None

    def value(self, typed):
        """The setting's value from what the command line gave (None stays None)."""
        if typed is None or self.parse is None:
            return typed
        return self.parse(typed, self.name)


def opt(default, option: Option):
    """A dataclass field declared with its option."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"option": option})
    return field(default=default, metadata={"option": option})


def options_of(cls) -> dict[str, Option]:
    """Field name -> its :class:`Option`, for every declared field of a dataclass."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(cls) if "option" in f.metadata}


def affecting(cls, *affects: Affects, planned: bool | None = None) -> tuple[str, ...]:
    """The fields of a dataclass whose option affects one of ``affects`` (those compared as
    planned, or as given, when ``planned`` is given), in declaration order."""
    return tuple(name for name, option in options_of(cls).items() if option.affects in affects
                 and (planned is None or option.planned == planned))


def unclassified(cls) -> list[str]:
    """The fields of a settings dataclass that do not say what they affect (no option, or no ``affects``)."""
    return [f.name for f in dataclasses.fields(cls)
            if "option" not in f.metadata or f.metadata["option"].affects is None]


# ----------------------------------------------------------------------------- typed text -> values
def parse_numbers(values, option: str, kind: type = int) -> list | None:
    """A list option as typed: ``"1,10 25"`` or ``["1,10", "25"]`` (repeated options) ->
    ``[1, 10, 25]`` of ``kind`` (int or float); ``None`` when nothing was given."""
    if not values:
        return None
    texts = [values] if isinstance(values, str) else values
    out = []
    for part in ",".join(str(v) for v in texts).replace(" ", ",").split(","):
        if part:
            try:
                out.append(kind(part))
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{option}: {part!r} is not {what}") from None
    return out


def parse_floats(values, option: str) -> list[float] | None:
    return parse_numbers(values, option, float)


def parse_lengths(values, option: str) -> list[int] | str | None:
    """Snippet lengths: integers, or ``auto``."""
    texts = [values] if isinstance(values, str) else list(values or [])
    if texts and [v.strip().lower() for v in texts] == ["auto"]:
        return "auto"
    return parse_numbers(texts, option)


def parse_names(values, option: str) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    if not values:
        return None
    texts = [values] if isinstance(values, str) else values
    return [p for v in texts for p in str(v).split(",") if p]


def parse_spans(value, option: str) -> dict | None:
    """``"coarse=3,medium=3,fine=2"`` -> ``{"coarse": 3, "medium": 3, "fine": 2}``."""
    if not value:
        return None
    if isinstance(value, dict):
        return value
    spans = {}
    for part in str(value).split(","):
        level, sep, k = part.partition("=")
        try:
            spans[level.strip()] = int(k)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"{option}: expected LEVEL=K pairs like fine=2, got {part!r}") from None
    return spans
