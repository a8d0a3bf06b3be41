"""A video's outputs, written once its prediction is done: ``{stem}_pred.npy``, the colour
and side-by-side videos, PNG16/EXR/PLY frames, the snippets and the run report.

Every output file is written under a temporary name and renamed when complete; the
``{stem}_run.json`` report is written last, so its presence marks a finished video.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from rollingdepth._version import __version__
from rollingdepth.io.depth_points import read_depth_points
from rollingdepth.io.exports import (FAR_LIMIT, DepthMapping, PinholeCamera, VideoMapping, fit_inverse_depth, point_cloud,
                                     write_exr, write_ply)
from rollingdepth.io.video_io import InputError, VideoSource, VideoWriter, atomic_dir, atomic_path
from rollingdepth.io.visualize import SBS_GAP, colorize, side_by_side, to_uint16
from rollingdepth.runtime.background import BackgroundQueue, prefetch
from rollingdepth.runtime.checkpoints import OutputsState
from rollingdepth.runtime.run_config import RunConfig
from rollingdepth.runtime.stores import JOURNAL

__all__ = ["PendingOutputs", "VideoResult", "expected_outputs", "outputs_complete"]

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
    """The files (and folder) a complete run of ``stem`` leaves in ``out_dir``; run.json last."""
    paths = []
    if cfg.save_npy:
        paths.append(out_dir / f"{stem}_pred.npy")
    paths += [out_dir / f"{stem}_{cmap}.mp4" for cmap in cfg.cmaps]
    if cfg.save_sbs:
        paths.append(out_dir / f"{stem}_rgbd.mp4")
    if cfg.save_snippets:
        paths.append(out_dir / f"{stem}_snippets.npz")
    if cfg.save_png16:
        paths.append(out_dir / f"{stem}_depth16")
    if cfg.save_exr:
        paths.append(out_dir / f"{stem}_exr")
    if cfg.save_ply:
        paths.append(out_dir / f"{stem}_ply")
    paths.append(out_dir / f"{stem}_run.json")
    return paths


def outputs_complete(out_dir: Path, stem: str, cfg: RunConfig) -> bool:
    return all(p.exists() for p in expected_outputs(out_dir, stem, cfg))


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` to ``size`` (area filter when shrinking)."""
    import cv2

    if frames.shape[1:3] == tuple(size):
        return frames
    interp = cv2.INTER_AREA if size[0] < frames.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=interp) for f in frames])


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
        self._write_units = 1  # the write stage's progress total: a unit per frame per file, one for run.json

    @property
    def frames(self) -> int:
        return self.result.num_frames if self.result is not None else 0

    def discard(self, finished: bool = False) -> None:
        """Close the work folder's files; remove it when ``finished`` or when it holds nothing to
        resume from (outputs are written under temporary names that remove themselves)."""
        import shutil

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
            written = self._write_frames(progress, cancel)
            if self.cfg.save_snippets:
                written.append(self._write_snippets())
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
            first = cfg.start_frame + shot["first"]
            idx = points.in_frames(first, first + shot["frames"])
            lo, hi = shot["depth_range"]
            if len(idx) < 2:  # checked before the run: --depth-range covers these shots
                mappings.append(DepthMapping("depth", lo, hi, near=near, far=far))
                continue
            pred = self._prediction_at(points, idx)
            try:
                scale, shift = fit_inverse_depth(pred, points.depth[idx])
            except ValueError as exc:
                raise InputError(f"{cfg.depth_points}: frames {first}..{first + shot['frames'] - 1}: {exc}") from None
            mapping = DepthMapping("fitted", lo, hi, far=FAR_LIMIT * float(points.depth[idx].max()), scale=scale, shift=shift)
            error = mapping.apply(pred).astype(np.float64) - points.depth[idx]
            self.depth_fits.append({"first": shot["first"], "frames": shot["frames"], "points": int(len(idx)),
                                    "scale": scale, "shift": shift, "rms": float(np.sqrt(np.mean(error**2))),
                                    "max_abs": float(np.abs(error).max())})
            mappings.append(mapping)
        fits = self.depth_fits
        if fits:
            self.notes.append(f"{self.source.stem}: known distances fitted in {len(fits)} shot(s): residual rms "
                              f"{max(f['rms'] for f in fits):.3g} at most, largest error {max(f['max_abs'] for f in fits):.3g} "
                              f"(in the points' unit)")
        return VideoMapping(tuple(mappings), tuple(s["first"] for s in self._shots()))

    @functools.cached_property
    def _sound(self):
        """The source's sound for the frames processed, looked up once for every video written
        (None: no sound, ``--no-audio``, or ``--fps`` retiming the frames, which it would no longer match)."""
        if not self.cfg.audio or self.cfg.output_fps:
            return None
        return self.source.audio(self.cfg.start_frame, self.frames)

    def _shots(self) -> list[dict]:
        """The shots' reports (one shot for a video run in one piece)."""
        return self.result.shots or [{"index": 0, "first": 0, "frames": self.result.num_frames, "found_by": "start",
                                      "dilations": self.result.settings.get("dilations"),
                                      "coalign_loss": self.result.coalign_loss,
                                      "depth_range": list(self.result.depth_range)}]

    def _prediction_at(self, points, idx: np.ndarray) -> np.ndarray:
        """The prediction at the points ``idx`` (input pixels, nearest pixel at the processing size)."""
        return points.values(idx, lambda frame: self.result.depth[frame - self.cfg.start_frame], self.source.size,
                             self.result.size)

    @property
    def camera(self) -> PinholeCamera:
        """The point clouds' pinhole camera at the output size."""
        return PinholeCamera.for_size(self.size, self.cfg.fov, self.cfg.focal, input_width=self.source.size[1])

    @property
    def _npy_separate(self) -> bool:
        """Whether ``{stem}_pred.npy`` is written here (restored size, or depth values) rather than
        being the prediction's own file, renamed."""
        return self.cfg.restore_res or self.mapping.is_depth

    def _sinks(self, stack: contextlib.ExitStack) -> list[tuple[Path, Callable]]:
        """One ``(final path, write(i, frame, values, image))`` per per-frame output, opened in
        ``stack``: ``frame`` is the prediction, ``values`` what the npy/EXR/PNG16/PLY files hold
        (:attr:`mapping`), ``image`` the input frame at the output size (or None)."""
        import cv2

        from rollingdepth.runtime.stores import NpyFile

        cfg, stem, size, out_dir = self.cfg, self.source.stem, self.size, self.out_dir
        vmin, vmax = self.result.depth_range
        lo, hi = self.mapping.value_range
        fps = cfg.output_fps or getattr(self.source, "rate", None) or self.source.fps  # a video's exact rate
        sinks: list[tuple[Path, Callable]] = []
        done = self._written_before()
        if cfg.save_npy and self._npy_separate and f"{stem}_pred.npy" not in done:
            self._npy_tmp = self.workdir / "pred_values.npy"  # in the work folder, moved when complete
            values_file = NpyFile(self._npy_tmp, (self.frames, *size), np.float32)
            stack.callback(values_file.close)
            sinks.append((out_dir / f"{stem}_pred.npy", lambda i, frame, values, image: values_file.__setitem__(i, values)))
        for cmap in [c for c in cfg.cmaps if f"{stem}_{c}.mp4" not in done]:
            video = stack.enter_context(VideoWriter(stack.enter_context(atomic_path(out_dir / f"{stem}_{cmap}.mp4")), fps, size,
                                                    audio=self._sound))
            sinks.append((out_dir / f"{stem}_{cmap}.mp4",
                          lambda i, frame, values, image, video=video, cmap=cmap: video.write(colorize(frame, cmap, vmin, vmax))))
        if cfg.save_sbs and f"{stem}_rgbd.mp4" not in done:
            final = out_dir / f"{stem}_rgbd.mp4"
            sbs = stack.enter_context(VideoWriter(stack.enter_context(atomic_path(final)), fps, (size[0], 2 * size[1] + SBS_GAP),
                                                  audio=self._sound))
            sinks.append((final, lambda i, frame, values, image: sbs.write(
                side_by_side(image, colorize(frame, cfg.cmaps[0], vmin, vmax)))))

        def per_frame_files(name: str, suffix: str, write, every: int = 1) -> None:
            """A folder ``{stem}_{name}`` of ``000000{suffix} ...`` (frames ``i % every == 0``)."""
            final = out_dir / f"{stem}_{name}"
            if final.name in done:
                return
            folder = stack.enter_context(atomic_dir(final))

            def sink(i, frame, values, image):
                if i % every == 0:
                    write(folder / f"{i:06d}{suffix}", values, image)

            sinks.append((final, sink))

        if cfg.save_png16:
            def write_png(path: Path, values, image):
                if not cv2.imwrite(str(path), to_uint16(values, lo, hi)):
                    raise OSError(f"could not write {out_dir / f'{stem}_depth16' / path.name}")

            per_frame_files("depth16", ".png", write_png)
        if cfg.save_exr:
            per_frame_files("exr", ".exr", lambda path, values, image: write_exr(path, values))
        if cfg.save_ply:
            camera, stride = self.camera, cfg.ply_stride
            comment = f"rollingdepth {__version__}: {stem}, pinhole f={camera.focal:.6g}px, x right, y down, z forward"
            per_frame_files("ply", ".ply", lambda path, values, image: write_ply(
                path, point_cloud(values, image, camera, stride), comment), every=cfg.save_ply)
        return sinks

    def _write_frames(self, progress: Progress, cancel) -> list[Path]:
        """One pass over the prediction feeds every per-frame output; each output is encoded
        in its own thread (the video encoders run side by side). Returns the final paths of
        every output but the snippets and the report, including those a killed run finished."""
        import shutil

        cfg, n, stem, mapping = self.cfg, self.frames, self.source.stem, self.mapping
        done = self._written_before()
        with contextlib.ExitStack() as stack:
            sinks = self._sinks(stack)
            total = self._write_units = n * len(sinks) + 1
            if sinks:
                queues = [stack.enter_context(BackgroundQueue(depth=8, name=f"rollingdepth-{p.name}")) for p, _ in sinks]
                needs_rgb = any(p.name in (f"{stem}_rgbd.mp4", f"{stem}_ply") for p, _ in sinks)
                rgb = prefetch(self.source.frames(cfg.start_frame, cfg.max_frames)) if needs_rgb else None  # re-read
                progress("write", 0, total)
                for i, frame in enumerate(self._frames_out()):
                    if cancel is not None and cancel.is_set():
                        raise KeyboardInterrupt
                    image = next(rgb, None) if rgb is not None else None
                    if rgb is not None and image is None:
                        raise InputError(f"{self.source.path}: the video gave fewer frames on a second read ({i} of {n})")
                    if image is not None:
                        image = _resize_frames(image[None], self.size)[0]  # [H, W, 3] at the output size
                    values = mapping.at(i).apply(frame)
                    for q, (_, sink) in zip(queues, sinks):
                        q.submit(sink, i, frame, values, image)
                    progress("write", (i + 1) * len(sinks), total)
                for q in queues:
                    q.drain(cancel)
        # every file is complete (and renamed) here but the .npy
        new = [p for p, _ in sinks if p.suffix != ".npy"]
        final = self.out_dir / f"{stem}_pred.npy"
        if cfg.save_npy and final.name not in done:
            if self._npy_separate:
                shutil.move(self._npy_tmp, final)
            else:
                self.result.depth.flush()
                shutil.move(self.result.depth.path, final)  # a rename unless --work-dir is on another disk
            new.insert(0, final)
        self.store.checkpoint(OutputsState(files=sorted(done | {p.name for p in new})))
        return [p for p in expected_outputs(self.out_dir, stem, cfg) if p.name in done or p in new]

    def _write_snippets(self) -> Path:
        """``{stem}_snippets.npz`` from the decoded snippet maps in the work folder (stored, no copy)."""
        import zipfile

        final = self.out_dir / f"{self.source.stem}_snippets.npz"
        if final.name in self._written_before():
            return final
        settings = self.result.settings
        with atomic_path(final) as tmp:
            np.save(self.workdir / "dilations.npy", np.array(settings["dilations"]))
            np.save(self.workdir / "snippet_lengths.npy", np.array(settings["snippet_lengths"]))
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for name in ("dilations", "snippet_lengths"):
                    z.write(self.workdir / f"{name}.npy", f"{name}.npy")
                for g, maps in enumerate(self.result.snippets):
                    maps.flush()
                    z.write(maps.path, f"snippets_{g}.npy")
        return final

    def _write_report(self, written: list[Path]) -> Path:
        """``{stem}_run.json``: settings used, timings, work done, memory, versions; written last."""
        cfg, result, mapping = self.cfg, self.result, self.mapping
        seconds = time.perf_counter() - self.started
        vmin, vmax = result.depth_range
        self.report = {
            "input": str(self.source.path),
            "frames": result.num_frames,
            "input_frames": {"decoded": self.source.frame_count,
                             "container": getattr(self.source, "container_frames", None)},
            "input_fps": self.source.fps,
            "output_fps": cfg.output_fps or self.source.fps,
            "output_size": list(self.size),
            "settings": {**cfg.to_dict(), **result.settings, "seed": cfg.seed},
            "coalign_loss": result.coalign_loss,
            "depth_range": [vmin, vmax],
            "shots": self._shots(),
            "depth_points": getattr(self, "depth_fits", None),
            "depth_output": mapping.to_dict(),
            "png16_range": list(mapping.value_range) if cfg.save_png16 else None,
            "png16_mapping": "value = min + png / 65535 * (max - min), [min, max] = png16_range" if cfg.save_png16 else None,
            "point_cloud": {"every": cfg.save_ply, "stride": cfg.ply_stride, **self.camera.to_dict()} if cfg.save_ply else None,
            **({"units": result.units} if result.units else {}),
            "counts": dict(result.counts),
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
            "estimate_s": self.estimate_s,
            "seconds": round(seconds, 3),
            "seconds_per_frame": round(seconds / max(result.num_frames, 1), 4),
            "peak_memory": _peak_memory(),
            "versions": _versions(),
            "outputs": [p.name for p in written] + [f"{self.source.stem}_run.json"],
            **self.report_extra,
        }
        final = self.out_dir / f"{self.source.stem}_run.json"
        with atomic_path(final) as tmp:
            tmp.write_text(json.dumps(self.report, indent=2))
        return final
