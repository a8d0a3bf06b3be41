"""Stereo 3D videos made again from a finished run's prediction, without the model
(``stereo-video``): another strength, convergence or layout costs a decode, the warp and an
encode, not a run. The same writer as run-video's (the ``stereo`` output format) and the same
frame feed (:func:`rollingdepth.runtime.outputs.feed`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import numpy as np

from rollingdepth.io.exports import DepthMapping, VideoMapping
from rollingdepth.io.output_formats import RUN_REPORT, VideoOutput, output_format
from rollingdepth.io.video_io import InputError, VideoSource, load_source
from rollingdepth.runtime.outputs import FrameFeed, feed
from rollingdepth.runtime.run_config import RunConfig, option_name

__all__ = ["FinishedRun", "stereo_again"]


class FinishedRun:
    """A run-video prediction ``{stem}_pred.npy`` (inverse depth) with its ``{stem}_run.json``."""

    def __init__(self, prediction: Path, input_path: Path | None = None):
        self.prediction = Path(prediction)
        stem = output_format("npy").stem_of(self.prediction.name)
        report = RUN_REPORT.load(self.prediction.parent, stem) if stem else None
        if report is None:
            raise InputError(f"{self.prediction}: not a run-video prediction with its run.json beside it "
                             f"({output_format('npy').files} and {RUN_REPORT.files})")
        if (report.get("depth_output") or {}).get("mode", "inverse") != "inverse":
            raise InputError(f"{self.prediction}: holds depth ({option_name('depth_out')} depth or "
                             f"{option_name('depth_points')}); stereo needs the inverse depth that run-video writes by default")
        self.stem, self.report = stem, report
        self.values = np.load(self.prediction, mmap_mode="r")  # [N, h, w]
        if self.values.ndim == 4 and self.values.shape[1] == 1:
            self.values = self.values[:, 0]
        self.start = int(report["settings"].get("start_frame") or 0)
        self.source = load_source(Path(input_path or report["input"]).expanduser())
        if self.source.frame_count < self.start + len(self.values):
            raise InputError(f"{self.source.path}: {self.source.frame_count} frames, but the prediction covers frames "
                             f"{self.start}..{self.start + len(self.values) - 1}: not the video it was made from")

    def video_output(self, cfg: RunConfig, out_dir: Path) -> VideoOutput:
        """The prediction as the output formats' writers see it."""
        source, n = self.source, len(self.values)
        lo, hi = self.report["depth_range"]
        return VideoOutput(
            out_dir=out_dir, stem=self.stem, settings=cfg, frames=n, size=tuple(self.values.shape[1:]),
            input_size=tuple(source.size), prediction_range=(lo, hi),
            mapping=VideoMapping((DepthMapping("inverse", lo, hi),)),
            fps=getattr(source, "rate", None) or source.fps, sound=lambda: _sound(source, cfg, self.start, n),
            prediction_file=lambda: self.prediction, snippet_maps=lambda: [], snippet_plan=None,
            sample_aspect=getattr(source, "sample_aspect", None), frame_times=source.frame_times_of(self.start, n),
            shots=tuple(int(s["first"]) for s in self.report.get("shots") or [{"first": 0}]))


def _sound(source: VideoSource, cfg: RunConfig, start: int, count: int):
    return source.audio(start, count) if cfg.audio else None


def stereo_again(run: FinishedRun, cfg: RunConfig, out_dir: Path,
                 progress: Callable[[str, int, int], None] = lambda *a: None) -> list[Path]:
    """Write ``cfg.save_stereo``'s videos of ``run`` into ``out_dir`` (replacing them); their paths."""
    out = run.video_output(cfg, out_dir)
    fmt = output_format("stereo")
    with contextlib.ExitStack() as stack:
        writers = fmt.open(out, stack)
        frames = FrameFeed((np.asarray(row) for row in run.values), out.mapping, out.size,
                           run.source.frames(run.start, out.frames), str(run.source.path), out.frames)
        feed(writers, frames, stack, progress, out.frames * len(writers))
    return [out_dir / name for name in fmt.names(run.stem, cfg)]
