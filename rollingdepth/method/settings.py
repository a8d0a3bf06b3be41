"""The method's settings, declared and checked once.

``RollingDepthPipeline.__call__`` takes them as keyword arguments, ``run-video`` as options
(``RunConfig`` holds the same fields); both validate through :meth:`MethodSettings.validate`,
which names the offending parameter the way the caller spells it (``dilations`` for the
Python API, ``--dilations`` on the command line: the ``option`` of each field, an
:class:`~rollingdepth.option_spec.Option` with its help text and metavar).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from rollingdepth.method.snippets import MAX_SNIPPET_LEN
from rollingdepth.option_spec import (Affects, ListForm, Option, opt, options_of, parse_lengths, parse_numbers,
                                      parse_spans)

__all__ = ["DEFAULT_CHECKPOINT", "MAX_REFINE_STEP", "MethodSettings", "method_fields"]

DEFAULT_CHECKPOINT = "prs-eth/rollingdepth-v1-0"  # RollingDepth's checkpoint on the Hugging Face Hub

# Half of the scheduler's 1000 training steps: refinement uses the second half of 2R steps.
MAX_REFINE_STEP = 500


PREDICTION, COMPUTATION = Affects.PREDICTION, Affects.COMPUTATION


@dataclass
class MethodSettings:
    """What changes the prediction (besides the frames, the checkpoint, the dtype and the seed), and the
    batch sizes it is computed with; each field's option says which (``affects``)."""

    processing_res: int = opt(768, Option(
        ("--res", "--processing-resolution"), "Longer edge for processing; 0 keeps the size.", "INT", int,
        affects=PREDICTION))
    dilations: list[int] = opt([1, 25], Option(
        ("-d", "--dilations"), "Snippet dilations, e.g. -d 1,10,25 or -d 1 10 25 or -d 1 -d 25; must include 1.",
        "D[,D..]", list, parse_numbers, affects=PREDICTION, planned=True, list_form=ListForm.INTS))
    cap_dilation: bool = opt(True, Option(
        ("--cap-dilation/--no-cap-dilation",), "Shrink dilations that do not fit short videos.", None, bool,
        show_default=False, affects=PREDICTION))
    snippet_lengths: list[int] | str = opt([3], Option(  # per dilation, or "auto"
        ("--snippet-lengths", "--snip-len"), "Frames per snippet: one value, one per dilation (3,3,3 or 3 3 3), "
        "or auto (from motion and free memory).", "N[,N..]", list, parse_lengths,
        affects=PREDICTION, planned=True, list_form=ListForm.INTS))
    refine_step: int = opt(0, Option(
        ("--refine-step",), "Coarse-to-fine refinement steps (0 = none).", "INT", int, affects=PREDICTION))
    refine_snippet_len: int = opt(3, Option(
        ("--refine-snippet-len", "--refine-snippet-length"), "Snippet length during refinement.", "INT", int,
        affects=PREDICTION, planned=True))
    refine_start_dilation: int = opt(6, Option(
        ("--refine-start-dilation",), "First refinement dilation.", "INT", int, affects=PREDICTION, planned=True))
    coalign: str = opt("fast", Option(
        ("--coalign",), "Co-alignment solver: fast or reference.", "fast|reference", str, affects=PREDICTION))
    max_vae_bs: int = opt(4, Option(
        ("--max-vae-bs",), "Frames per VAE call. (default: 4)", "INT", int, affects=COMPUTATION))
    unet_batch_size: int | None = opt(None, Option(
        ("--unet-batch-size",), "Snippets per UNet call. (default: from free memory)", "INT", int,
        affects=COMPUTATION))
    attn_span: dict | None = opt(None, Option(  # experimental
        ("--attention-span", "--num-view-per-level"), "Experimental: attention span per UNet level, e.g. "
        "coarse=3,medium=3,fine=2 (frames attend to frames less than K apart).", "LEVEL=K,..", str,
        parse_spans, affects=PREDICTION))

    @property
    def auto_num_view(self) -> bool:
        return self.snippet_lengths == "auto"

    def validate(self, name: Callable[[str], str] | None = None,
                 max_refine_step: int = MAX_REFINE_STEP) -> "MethodSettings":
        """Check every value; return a copy with lists of ints and one snippet length per
        dilation (or ``"auto"``). ``name(field)`` spells the parameter in messages."""
        name = name or (lambda f: f)

        def ints(f: str, value, low: int, high: int | None = None, many: bool = False) -> list[int]:
            values = list(value) if many and isinstance(value, (list, tuple, np.ndarray)) else [value]
            if not values:
                raise ValueError(f"{name(f)}: give at least one value")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    raise ValueError(f"{name(f)}: expected integers, got {v!r}")
                if v < low or (high is not None and v > high):
                    bound = f"between {low} and {high}" if high is not None else f">= {low}"
                    raise ValueError(f"{name(f)}: {int(v)} is not an integer {bound}")
            return [int(v) for v in values]

        if isinstance(self.dilations, str):
            raise ValueError(f"{name('dilations')}: expected integers, got {self.dilations!r}")
        dilations = ints("dilations", self.dilations, 1, many=True)
        if 1 not in dilations:
            raise ValueError(f"{name('dilations')}: must include 1, got {dilations}")
        if self.auto_num_view:
            lengths: list[int] | str = "auto"
        else:
            if isinstance(self.snippet_lengths, str):
                raise ValueError(f"{name('snippet_lengths')}: {self.snippet_lengths!r} is neither integers nor 'auto'")
            lengths = ints("snippet_lengths", self.snippet_lengths, 1, MAX_SNIPPET_LEN, many=True)
            if len(lengths) == 1:
                lengths = lengths * len(dilations)
            elif len(lengths) != len(dilations):
                raise ValueError(
                    f"{name('snippet_lengths')}: give one value or one per dilation ({len(dilations)}), got {lengths}")
        ints("processing_res", self.processing_res, 0)
        ints("refine_step", self.refine_step, 0, max_refine_step)
        ints("refine_snippet_len", self.refine_snippet_len, 1, MAX_SNIPPET_LEN)
        ints("refine_start_dilation", self.refine_start_dilation, 1)
        ints("max_vae_bs", self.max_vae_bs, 1)
        if self.unet_batch_size is not None:
            ints("unet_batch_size", self.unet_batch_size, 1)
        from rollingdepth.method.coalign import COALIGN_MODES  # torch: not needed for --help

        if self.coalign not in COALIGN_MODES:
            raise ValueError(f"{name('coalign')}: unknown mode {self.coalign!r}; expected one of {', '.join(COALIGN_MODES)}")
        if self.attn_span is not None:
            from rollingdepth.method.cross_frame_attention import ATTENTION_LEVELS

            if not isinstance(self.attn_span, dict) or not set(self.attn_span) <= set(ATTENTION_LEVELS):
                raise ValueError(f"{name('attn_span')}: levels are {', '.join(ATTENTION_LEVELS)}, got {self.attn_span!r}")
            ints("attn_span", list(self.attn_span.values()), 1, MAX_SNIPPET_LEN, many=True)
        return dataclasses.replace(self, dilations=dilations, snippet_lengths=lengths,
                                   processing_res=int(self.processing_res), cap_dilation=bool(self.cap_dilation),
                                   attn_span=dict(self.attn_span) if self.attn_span else None)


def method_fields() -> dict[str, str]:
    """Field name -> command-line option, for every method setting."""
    return {name: option.name for name, option in options_of(MethodSettings).items()}
