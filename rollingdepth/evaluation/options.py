"""eval-depth's own options, declared once: the files to score, the benchmark, the protocol.

The prediction settings it shares with run-video (``--preset``, ``--res``, ``--dilations``, ...)
are declared with their fields in :class:`~rollingdepth.runtime.run_config.RunConfig`. How
``--help`` groups them is the command's (:mod:`rollingdepth.frontends.eval_depth`).
"""

from __future__ import annotations

from pathlib import Path

from rollingdepth.io.output_formats import output_format, prediction_patterns
from rollingdepth.option_spec import Option

__all__ = ["EVAL_OPTIONS", "eval_option"]

EVAL_OPTIONS: dict[str, Option] = {
    "pred": Option(("--pred",), f"A run-video prediction ({prediction_patterns()}, with its run.json beside it), "
                   "or a folder of them.", "PATH", Path),
    "gt": Option(("--gt",), "GT depth: .npy [N, H, W] or a folder of 16-bit PNGs; a folder of those (by stem) for a "
                 "folder of predictions.", "PATH", Path),
    "rgb": Option(("--rgb",), "The input video(s), for the optical-flow warping error.", "PATH", Path),
    "mask": Option(("--mask",), "Valid-pixel masks: .npy or a folder of PNGs (non-zero = valid).", "PATH", Path),
    "gt_scale": Option(("--gt-scale",), "Divide GT values by this (1000 for mm, 5000 for TUM/Bonn PNGs).", None,
                       float),
    "dataset": Option(("--dataset",), "Score a whole benchmark: pointodyssey, scannet, bonn, dydtof, sintel, kitti or "
                      "nyuv2.", "NAME"),
    "root": Option(("--root",), "Where the dataset is stored, in its published layout.", "DIR", Path),
    "split": Option(("--split",), "A bundled split or a folder of split CSVs. (default: the paper's)", "NAME|DIR"),
    "predictions": Option(("--predictions",), f"Score {output_format('npy').files.format(stem='{sequence}')} files made "
                          "earlier instead of running the model.", "DIR", Path),
    "min_depth": Option(("--min-depth",), "Valid GT above this depth. (default: the dataset's, else 1e-3)", None,
                        float),
    "max_depth": Option(("--max-depth",), "Valid GT below this depth. (default: the dataset's, else 80)", None,
                        float),
    "align": Option(("--align",), "Scale and shift per video or per frame in disparity, or per video in depth.",
                    "video|frame|depth"),
    "average": Option(("--average",), "Pool a video's valid pixels, or average per-frame metrics. (default: frames "
                      "with --dataset, else pixels)", "pixels|frames"),
    "protocol": Option(("--protocol",), "rollingdepth (ours) or vda: Video-Depth-Anything's benchmark code "
                       "(prediction clipped at 1e-3, their per-dataset depth cap, per-frame averages, their TAE; "
                       "--align and --average do not apply). (default: rollingdepth)", "rollingdepth|vda"),
}


def eval_option(name: str) -> str:
    """The spelling of one of eval-depth's own options: ``eval_option("root") -> "--root"``."""
    return EVAL_OPTIONS[name].name
