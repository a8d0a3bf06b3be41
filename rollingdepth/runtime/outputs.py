"""A video's outputs, written once its prediction is done: every format declared in
``rollingdepth.io.output_formats`` that the settings turn on (the npy, the colour and side-by-side
videos, PNG16/EXR/PLY frames, the snippets), then the run report.

Every output file is written under a temporary name and renamed when complete; the run report
is written last, so its presence marks a finished video.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from rollingdepth._version import __version__
from rollingdepth.io.depth_points import read_depth_points
from rollingdepth.io.exports import FAR_LIMIT, DepthMapping, VideoMapping, fit_inverse_depth
from rollingdepth.io.output_formats import (RUN_REPORT, OutputFrame, VideoOutput, Writer, expected_names,
                                            output_formats)
from rollingdepth.io.video_io import InputError, VideoSource
from rollingdepth.runtime.background import BackgroundQueue, prefetch
from rollingdepth.runtime.checkpoints import OutputsState
from rollingdepth.runtime.kept_frames import KeptFrames
from rollingdepth.runtime.reports import ShotReport
from rollingdepth.runtime.run_config import RunConfig
from rollingdepth.runtime.stores import JOURNAL

__all__ = ["FrameFeed", "PendingOutputs", "VideoResult", "expected_outputs", "feed", "outputs_complete"]

Progress = Callable[[str, int, int], None]


@dataclass
class VideoResult:
    """How one video went: its outputs, or the one-line error."""

    name: str
    frames: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False
    notes: list[str] = field(default_factory=list)  # decisions worth telling the user

    @property
    def ok(self) -> bool:
        return self.error is None


def expected_outputs(out_dir: Path, stem: str, cfg: RunConfig) -> list[Path]:
    """The files (and folders) a complete run of ``stem`` leaves in ``out_dir``; run.json last."""
    return [out_dir / name for name in expected_names(stem, cfg)]


def outputs_complete(out_dir: Path, stem: str, cfg: RunConfig) -> bool:
    return all(p.exists() for p in expected_outputs(out_dir, stem, cfg))


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` to ``size`` (area filter when shrinking)."""
    import cv2

    if frames.shape[1:3] == tuple(size):
        return frames
    interp = cv2.INTER_AREA if size[0] < frames.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=interp) for f in frames])


def _picture(source: VideoSource) -> dict | None:
    """The input's coded picture as its headers say (a video's), for run.json."""
    picture = getattr(source, "picture", None)
    if picture is None:
        return None
    return {"pix_fmt": picture.pix_fmt, "bit_depth": picture.bit_depth, "transfer": picture.transfer, "hdr": picture.hdr}


def _peak_memory() -> dict:
    import torch

    peak = {}
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak["host_mb"] = round(kb / 1024 if sys.platform != "darwin" else kb / 2**20, 1)
    except ImportError:  # Windows
        pass
    if torch.cuda.is_available():
        peak["cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {
        "rollingdepth": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class DepthFit:
    """A shot's inverse depth fitted to its known distances (``--depth-points``), as run.json reports it."""

    first: int  # the shot's first frame (of those processed)
    frames: int
    points: int  # the known distances in it
    scale: float
    shift: float
    rms: float  # the residual, in the points' unit
    max_abs: float


class PendingOutputs:
    """A video whose prediction is done and whose outputs are not written yet.

    It owns the video's work folder and temporary files: :meth:`write` writes the outputs and
    removes the work folder once all is written; :meth:`discard` removes temporary files and
    keeps the work folder only when it holds work a later run can resume from. ``write`` may
    run in another thread (the accelerator goes on with the next video meanwhile); setting
    ``cancel`` stops it at the next frame with ``KeyboardInterrupt``, leaving no partial output.
    """

    def __init__(self, source: VideoSource, out_dir: Path, cfg: RunConfig, workdir: Path, started: float,
                 report_extra: dict | None):
        self.source, self.out_dir, self.cfg, self.workdir = source, out_dir, cfg, workdir
        self.started, self.report_extra = started, report_extra or {}
        self.name = str(source.path)
        self.notes: list[str] = []  # decisions worth telling the user
        self.result = None  # the run's RunResult (runtime.passes)
        self.store = None  # its DiskStore
        self.estimate_s = None  # the estimated seconds of the prediction (rollingdepth.runtime.estimate)
        self.kept: KeptFrames | None = None  # the input's frames as the run decoded them, when kept
        self.frames_for_outputs: str | None = None  # where the outputs' input frames came from (None: not needed)
        self.depth_fits: list[DepthFit] | None = None  # the known distances' fit per shot (--depth-points)
        self._write_units = 1  # the write stage's progress total: a unit per frame per file, one for run.json

    @property
    def frames(self) -> int:
        return self.result.num_frames if self.result is not None else 0

    def discard(self, finished: bool = False) -> None:
        """Close the work folder's files; remove it when ``finished`` or when it holds nothing to
        resume from (outputs are written under temporary names that remove themselves)."""
        import shutil

        if self.kept is not None:  # a resumed run decodes again what it keeps
            self.kept.discard()
        if self.store is not None:
            self.store.close()
            resumable = bool(self.store.journal.entries)
        else:  # the folder could not be opened (another run's): not ours to remove
            resumable = (self.workdir / JOURNAL).exists()
        if finished or not resumable:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def write(self, progress: Progress, cancel=None) -> VideoResult:
        """Write every requested output (each under a temporary name), run.json last."""
        import errno

        finished = False
        try:
            t0 = time.perf_counter()
            written = self._write_files(progress, cancel)
            self.result.timings["write"] = time.perf_counter() - t0
            written.append(self._write_report(written))
            finished = True
            progress("write", self._write_units, self._write_units)
            return VideoResult(name=self.name, frames=self.frames, seconds=self.report["seconds"],
                               outputs=[p.name for p in written], notes=list(self.notes))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise self.store.no_space_error() from None
            raise
        finally:
            self.discard(finished)

    def _written_before(self) -> set[str]:
        """Output files a killed run of this work folder completed (recorded in its journal)."""
        return {name for e in self.store.journal.entries if e["stage"] == "write" for name in e["state"]["files"]
                if (self.out_dir / name).exists()}

    # ------------------------------------------------------------------ outputs
    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.source.size) if self.cfg.restore_res else self.result.size

    def _frames_out(self):
        """The prediction frame by frame at the output size."""
        from rollingdepth.runtime.pipeline import RollingDepthPipeline

        depth = self.result.depth
        for i in range(self.result.num_frames):
            frame = np.asarray(depth[i])
            yield RollingDepthPipeline.resize_depth(frame[None], self.size)[0] if self.cfg.restore_res else frame

    @functools.cached_property
    def mapping(self) -> VideoMapping:
        """What the npy, EXR, PNG16 and PLY outputs hold: the prediction, depth over the chosen
        range, or depth fitted per shot to the known distances (``--depth-points``)."""
        cfg = self.cfg
        near, far = cfg.depth_range or (None, None)
        if not cfg.depth_points:
            return VideoMapping((DepthMapping(cfg.depth_out, *self.result.depth_range, near=near, far=far),))
        points = read_depth_points(Path(cfg.depth_points).expanduser())
        mappings, self.depth_fits = [], []
        for shot in self._shots():
            first = cfg.start_frame + shot.first
            idx = points.in_frames(first, first + shot.frames)
            lo, hi = shot.depth_range
            if len(idx) < 2:  # checked before the run: --depth-range covers these shots
                mappings.append(DepthMapping("depth", lo, hi, near=near, far=far))
                continue
            pred = self._prediction_at(points, idx)
            try:
                scale, shift = fit_inverse_depth(pred, points.depth[idx])
            except ValueError as exc:
                raise InputError(f"{cfg.depth_points}: frames {first}..{first + shot.frames - 1}: {exc}") from None
            mapping = DepthMapping("fitted", lo, hi, far=FAR_LIMIT * float(points.depth[idx].max()), scale=scale, shift=shift)
            error = mapping.apply(pred).astype(np.float64) - points.depth[idx]
            self.depth_fits.append(DepthFit(shot.first, shot.frames, int(len(idx)), scale, shift,
                                            float(np.sqrt(np.mean(error**2))), float(np.abs(error).max())))
            mappings.append(mapping)
        fits = self.depth_fits
        if fits:
            self.notes.append(f"{self.source.stem}: known distances fitted in {len(fits)} shot(s): residual rms "
                              f"{max(f.rms for f in fits):.3g} at most, largest error {max(f.max_abs for f in fits):.3g} "
                              f"(in the points' unit)")
        return VideoMapping(tuple(mappings), tuple(s.first for s in self._shots()))

    @functools.cached_property
    def _sound(self):
        """The source's sound for the frames processed, looked up once for every video written
        (None: no sound, ``--no-audio``, or ``--fps`` retiming the frames, which it would no longer match)."""
        if not self.cfg.audio or self.cfg.output_fps:
            return None
        return self.source.audio(self.cfg.start_frame, self.frames)

    def _shots(self) -> list[ShotReport]:
        """The shots' reports (one shot for a video run in one piece)."""
        return self.result.shots or [ShotReport.whole(self.result)]

    def _prediction_at(self, points, idx: np.ndarray) -> np.ndarray:
        """The prediction at the points ``idx`` (input pixels, nearest pixel at the processing size)."""
        return points.values(idx, lambda frame: self.result.depth[frame - self.cfg.start_frame], self.source.size,
                             self.result.size)

    @functools.cached_property
    def video_output(self) -> VideoOutput:
        """The video as the output formats' writers see it."""
        cfg, result = self.cfg, self.result
        return VideoOutput(
            out_dir=self.out_dir, stem=self.source.stem, settings=cfg, frames=self.frames, size=self.size,
            input_size=tuple(self.source.size), prediction_range=tuple(result.depth_range), mapping=self.mapping,
            fps=cfg.output_fps or getattr(self.source, "rate", None) or self.source.fps,  # a video's exact rate
            sound=lambda: self._sound, prediction_file=self._prediction_file, snippet_maps=self._snippet_maps,
            sample_aspect=getattr(self.source, "sample_aspect", None),  # an anamorphic source's pixels, tagged as they are
            frame_times=None if cfg.output_fps else self.source.frame_times_of(cfg.start_frame, self.frames),
            shots=tuple(s.first for s in self._shots()), done=frozenset(self._written_before()),
            snippet_plan=(result.plan.dilations, result.plan.snippet_lengths) if result.plan else None)

    def _prediction_file(self) -> Path:
        self.result.depth.flush()
        return self.result.depth.path

    def _snippet_maps(self) -> list[Path]:
        for maps in self.result.snippets:
            maps.flush()
        return [maps.path for maps in self.result.snippets]

    def _write_files(self, progress: Progress, cancel) -> list[Path]:
        """Every requested output but run.json, each as its format declares it: the frame-by-frame
        ones in one pass over the prediction, then the whole ones. Returns the final paths of them
        all, including those a killed run finished."""
        out = self.video_output
        formats = [f for f in output_formats() if f.enabled(self.cfg)]
        with contextlib.ExitStack() as stack:
            opened = [(fmt, name, write) for fmt in formats for name, write in fmt.open(out, stack)]
            self._write_units = self.frames * len(opened) + 1
            if opened:
                self._feed([(name, write) for _, name, write in opened], any(f.needs_rgb for f, _, _ in opened), stack,
                           progress, cancel)
        new = {name for _, name, _ in opened} | {name for fmt in formats for name in fmt.finish(out)}
        self.store.checkpoint(OutputsState(files=sorted(out.done | new)))
        return [p for p in expected_outputs(self.out_dir, self.source.stem, self.cfg) if p.name in out.done | new]

    def _feed(self, writers: list[tuple[str, Writer]], needs_rgb: bool, stack: contextlib.ExitStack, progress: Progress,
              cancel) -> None:
        """Each frame to every writer (:func:`feed`), with the input's frames where a writer needs them."""
        rgb = self._input_frames() if needs_rgb else None
        frames = FrameFeed(self._frames_out(), self.mapping, self.size, rgb, str(self.source.path), self.frames)
        feed(writers, frames, stack, progress, self._write_units, cancel)

    def _input_frames(self) -> Iterable[np.ndarray]:
        """The input's frames: those the run kept as it decoded them when they are all there
        (:mod:`rollingdepth.runtime.kept_frames`), else the input decoded a second time."""
        kept = self.kept.read(self.frames) if self.kept is not None else None
        self.frames_for_outputs = "decoded again" if kept is None else "kept from the run's decode"
        return kept if kept is not None else self.source.frames(self.cfg.start_frame, self.cfg.max_frames)

    def _write_report(self, written: list[Path]) -> Path:
        """``{stem}_run.json``: settings used, timings, work done, memory, versions; written last."""
        cfg, result, mapping = self.cfg, self.result, self.mapping
        seconds = time.perf_counter() - self.started
        vmin, vmax = result.depth_range
        self.report = {
            "input": str(self.source.path),
            "frames": result.num_frames,
            "input_frames": {"decoded": self.source.frame_count,
                             "container": getattr(self.source, "container_frames", None),
                             "for_outputs": self.frames_for_outputs},
            "input_fps": self.source.fps,
            "input_picture": _picture(self.source),
            "output_fps": cfg.output_fps or self.source.fps,
            "output_size": list(self.size),
            "settings": {**cfg.to_dict(), **result.settings, "seed": cfg.seed},
            "coalign_loss": result.coalign_loss,
            "depth_range": [vmin, vmax],
            "shots": [shot.to_json() for shot in self._shots()],
            "depth_points": [dataclasses.asdict(f) for f in self.depth_fits] if self.depth_fits is not None else None,
            "depth_output": mapping.to_dict(),
            **{key: value for fmt in output_formats() for key, value in fmt.report(self.video_output).items()},
            **({"units": [unit.to_json() for unit in result.units]} if result.units else {}),
            "counts": result.counts.as_dict(),
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
            "estimate_s": self.estimate_s,
            "seconds": round(seconds, 3),
            "seconds_per_frame": round(seconds / max(result.num_frames, 1), 4),
            "peak_memory": _peak_memory(),
            "versions": _versions(),
            "outputs": [p.name for p in written] + RUN_REPORT.names(self.source.stem, cfg),
            **self.report_extra,
        }
        return RUN_REPORT.write(self.out_dir, self.source.stem, self.report)


@dataclass
class FrameFeed:
    """What the writers get, frame by frame: the prediction at the output size, its mapped values, and
    the input's frames as decoded (resized to the output size for the writers that take that)."""

    predictions: Iterable[np.ndarray]  # [H, W] each, at the output size
    mapping: VideoMapping
    size: tuple[int, int]  # (H, W) of the outputs
    images: Iterable[np.ndarray] | None  # uint8 [H, W, 3] as decoded; None: no writer needs them
    name: str  # the input, for a message
    frames: int


def feed(writers: list[tuple[str, Writer]], frames: FrameFeed, stack: contextlib.ExitStack, progress: Progress,
         total: int, cancel=None) -> None:
    """Each frame to every writer, each writer in its own thread (the video encoders side by side), the
    input decoded ahead in another; ``progress("write", done, total)``."""
    queues = [stack.enter_context(BackgroundQueue(depth=8, name=f"rollingdepth-{name}")) for name, _ in writers]
    rgb = prefetch(frames.images) if frames.images is not None else None
    progress("write", 0, total)
    for i, prediction in enumerate(frames.predictions):
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt
        image = _next_image(rgb, i, frames)  # [H, W, 3] as decoded
        frame = OutputFrame(i, prediction, frames.mapping.at(i).apply(prediction),
                            None if image is None else _resize_frames(image[None], frames.size)[0], image)
        for q, (_, write) in zip(queues, writers):
            q.submit(write, frame)
        progress("write", (i + 1) * len(writers), total)
    for q in queues:
        q.drain(cancel)


def _next_image(rgb, i: int, frames: FrameFeed) -> np.ndarray | None:
    """The input's frame ``i`` from the second read ``rgb`` (None: not read)."""
    if rgb is None:
        return None
    image = next(rgb, None)
    if image is None:
        raise InputError(f"{frames.name}: the video gave fewer frames on a second read ({i} of {frames.frames})")
    return image
