"""Running the pipeline on one video and writing its outputs (used by the ``run-video`` command).

Every output file is written under a temporary name and renamed when complete; the
``{stem}_run.json`` report is written last, so its presence marks a finished video.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .background import BackgroundQueue, prefetch
from .config import RunConfig
from .device import is_out_of_memory
from .loading import _HUB_ID, _load_checkpoint, _one_line, accelerate_pipeline, load_pipeline  # noqa: F401
from .video_io import InputError, VideoSource, VideoWriter, atomic_dir, atomic_path
from .visualize import SBS_GAP, colorize, side_by_side, to_uint16

__all__ = ["PendingOutputs", "VideoResult", "expected_outputs", "load_pipeline", "outputs_complete", "predict_video",
           "process_video"]

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


def _oom_advice(pipe, shape, cfg: RunConfig) -> str:
    """One line: what ran out of memory, with this run's numbers, and what to lower."""
    h, w = pipe.processing_size(shape[1], shape[2], cfg.processing_res)
    n = cfg.snippet_lengths if cfg.snippet_lengths == "auto" else max(cfg.snippet_lengths)
    dtype = str(pipe.dtype).replace("torch.", "")
    tips = [f"a lower --res (now {cfg.processing_res}, {w}x{h})"]
    if dtype == "float32":
        tips.append("--dtype bf16 or fp16 (now fp32)")
    tips.append(f"--unet-batch-size 1 (now {cfg.unet_batch_size or 'auto'})")
    tips.append(f"--max-vae-bs 1 (now {cfg.max_vae_bs})" if cfg.max_vae_bs > 1 else "")
    if n == "auto" or n > 2:
        tips.append(f"--snippet-lengths 2 (now {n})")
    return f"out of memory at {w}x{h}, {dtype}, num_view {n}: try " + ", ".join(t for t in tips if t)


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


def process_video(
    pipe, source: VideoSource, out_dir: Path, cfg: RunConfig, progress: Progress, report_extra: dict | None = None
) -> VideoResult:
    """Predict depth for one video, streaming, and write every requested output.

    Frames stream from the file; spilled data live in a work folder inside ``out_dir`` that is
    removed afterwards, also after an error or Ctrl-C. ``report_extra`` goes into run.json.
    """
    return predict_video(pipe, source, out_dir, cfg, progress, report_extra).write(progress)


class PendingOutputs:
    """A video whose prediction is done and whose outputs are not written yet.

    It owns the video's work folder and temporary files: ``write`` writes the outputs and
    removes them (also on error), ``discard`` just removes them. ``write`` may run in another
    thread (the accelerator goes on with the next video meanwhile); setting ``cancel`` stops
    it at the next frame with ``KeyboardInterrupt``, leaving no partial output.
    """

    def __init__(self, name: str, frames: int, notes: list[str], write, cleanup):
        self.name, self.frames, self.notes = name, frames, notes
        self._write, self._cleanup = write, cleanup

    def write(self, progress: Progress, cancel=None) -> VideoResult:
        try:
            return self._write(progress, cancel)
        finally:
            self._cleanup()

    def discard(self) -> None:
        self._cleanup()


def predict_video(
    pipe, source: VideoSource, out_dir: Path, cfg: RunConfig, progress: Progress, report_extra: dict | None = None
) -> PendingOutputs:
    """The streaming prediction of one video (the accelerator's part of :func:`process_video`)."""
    import shutil
    import tempfile

    import torch

    from .streaming import NpyFile, predict_streaming

    started = time.perf_counter()
    stem = source.stem
    result = VideoResult(name=str(source.path))
    workdir = Path(tempfile.mkdtemp(prefix=f".{stem}.work-", dir=out_dir))
    partial: list[Path] = []  # temporary output files, removed unless renamed

    def cleanup():
        for path in partial:
            if path.exists():
                path.unlink()
        shutil.rmtree(workdir, ignore_errors=True)

    try:
        generator = torch.Generator(device=pipe.unet.device).manual_seed(cfg.seed)
        expected = source.frame_count - cfg.start_frame
        if cfg.frame_count > 0:
            expected = min(expected, cfg.frame_count)
        if source.frame_count and expected <= 0:
            raise InputError(f"{source.path}: --from {cfg.start_frame} is beyond the end of the video ({source.frame_count} frames)")

        def make_output(n, h, w):
            if cfg.save_npy and not cfg.restore_res:
                path = out_dir / f".{stem}_pred.partial.npy"
                partial.append(path)
            else:
                path = workdir / "prediction.npy"
            return NpyFile(path, (n, h, w), np.float32)

        snippet_files = {}

        def snippet_output(group, shape):
            path = workdir / f"snippets_{group}.npy"
            snippet_files[group] = path
            return NpyFile(path, shape, np.float32, row_ndim=2)

        outputs = {}

        def keep(n, h, w):
            outputs["pred"] = make_output(n, h, w)
            return outputs["pred"]

        frames = prefetch(source.frames(cfg.start_frame, cfg.frame_count))
        try:
            stream = predict_streaming(
                pipe, frames, keep, workdir=workdir, generator=generator, callback=progress,
                num_frames_hint=expected or None, snippets_output=snippet_output if cfg.save_snippets else None,
                **cfg.pipeline_kwargs(),
            )
        except ValueError as exc:
            if "no frames" in str(exc):
                raise InputError(f"{source.path}: the video has no frames") from None
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RuntimeError(_oom_advice(pipe, (0, *source.size), cfg)) from None
            raise
        timings = dict(stream.timings)
        result.frames = stream.num_frames
        auto = stream.settings.get("num_view_auto")
        if auto:
            result.notes.append(f"{stem}: --snippet-lengths auto chose {auto['num_view']} ({auto['reason']})")

        def write(progress: Progress, cancel) -> VideoResult:
            t0 = time.perf_counter()
            depth = outputs["pred"]  # [N, h, w] memory map at processing size
            size = tuple(source.size) if cfg.restore_res else stream.size
            vmin, vmax = stream.depth_range
            fps = cfg.output_fps or source.fps
            written = []
            n = stream.num_frames
            total_steps = n * (len(cfg.cmaps) + int(cfg.save_sbs) + int(cfg.save_png16) + int(cfg.restore_res and cfg.save_npy)) + 1
            step = 0

            def tick(k=1):
                nonlocal step
                step += k
                progress("write", step, total_steps)

            def frames_out():
                """The prediction frame by frame at the output size."""
                for i in range(n):
                    frame = np.asarray(depth[i])
                    yield pipe.resize_depth(frame[None], size)[0] if cfg.restore_res else frame

            # One pass over the prediction feeds every per-frame output; each output is encoded in
            # its own thread (the video encoders run side by side).
            with contextlib.ExitStack() as stack:
                sinks: list[tuple[Path, Callable]] = []  # (final path, write(i, frame, image))
                if cfg.save_npy and cfg.restore_res:
                    tmp_path = out_dir / f".{stem}_pred.partial.npy"
                    partial.append(tmp_path)
                    restored = NpyFile(tmp_path, (n, *size), np.float32)
                    stack.callback(restored.close)
                    sinks.append((out_dir / f"{stem}_pred.npy", lambda i, frame, image: restored.__setitem__(i, frame)))
                for cmap in cfg.cmaps:
                    final = out_dir / f"{stem}_{cmap}.mp4"
                    video = stack.enter_context(VideoWriter(stack.enter_context(atomic_path(final)), fps, size))
                    sinks.append((final, lambda i, frame, image, video=video, cmap=cmap: video.write(colorize(frame, cmap, vmin, vmax))))
                if cfg.save_sbs:
                    final = out_dir / f"{stem}_rgbd.mp4"
                    sbs = stack.enter_context(VideoWriter(stack.enter_context(atomic_path(final)), fps, (size[0], 2 * size[1] + SBS_GAP)))
                    sinks.append((final, lambda i, frame, image: sbs.write(
                        side_by_side(_resize_frames(image[None], size)[0], colorize(frame, cfg.cmaps[0], vmin, vmax)))))
                if cfg.save_png16:
                    import cv2

                    final = out_dir / f"{stem}_depth16"
                    png_dir = stack.enter_context(atomic_dir(final))

                    def write_png(i, frame, image, final=final):
                        if not cv2.imwrite(str(png_dir / f"{i:06d}.png"), to_uint16(frame, vmin, vmax)):
                            raise OSError(f"could not write {final / f'{i:06d}.png'}")

                    sinks.append((final, write_png))
                if sinks:
                    queues = [stack.enter_context(BackgroundQueue(depth=8, name=f"rollingdepth-{p.name}")) for p, _ in sinks]
                    rgb = prefetch(source.frames(cfg.start_frame, cfg.frame_count)) if cfg.save_sbs else None  # re-read the input
                    for i, frame in enumerate(frames_out()):
                        if cancel is not None and cancel.is_set():
                            raise KeyboardInterrupt
                        image = next(rgb, None) if rgb is not None else None
                        if rgb is not None and image is None:
                            raise InputError(f"{source.path}: the video gave fewer frames on a second read ({i} of {n})")
                        for q, (_, sink) in zip(queues, sinks):
                            q.submit(sink, i, frame, image)
                        tick(len(sinks))
                    for q in queues:
                        q.drain(cancel)
            # every file is complete (and renamed) here
            if cfg.save_npy:
                final = out_dir / f"{stem}_pred.npy"
                if not cfg.restore_res:
                    depth.flush()  # renamed while still open: reading goes on through the same file
                os.replace(partial[-1] if cfg.restore_res else partial[0], final)
                written.append(final)
            tick()
            written += [out_dir / f"{stem}_{cmap}.mp4" for cmap in cfg.cmaps]
            written += [out_dir / f"{stem}_rgbd.mp4"] if cfg.save_sbs else []
            if cfg.save_snippets:
                import zipfile

                final = out_dir / f"{stem}_snippets.npz"
                with atomic_path(final) as tmp:
                    np.save(workdir / "dilations.npy", np.array(stream.settings["dilations"]))
                    np.save(workdir / "snippet_lengths.npy", np.array(stream.settings["snippet_lengths"]))
                    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                        for name in ("dilations", "snippet_lengths"):
                            z.write(workdir / f"{name}.npy", f"{name}.npy")
                        for g, path in sorted(snippet_files.items()):
                            z.write(path, f"snippets_{g}.npy")
                written.append(final)
            written += [out_dir / f"{stem}_depth16"] if cfg.save_png16 else []
            timings["write"] = time.perf_counter() - t0

            result.seconds = time.perf_counter() - started
            settings = {**cfg.to_dict(), **stream.settings, "seed": cfg.seed}
            report = {
                "input": str(source.path),
                "frames": result.frames,
                "input_fps": source.fps,
                "output_fps": fps,
                "output_size": list(size),
                "settings": settings,
                "coalign_loss": stream.coalign_loss,
                "depth_range": [vmin, vmax],
                "png16_mapping": "depth = min + png / 65535 * (max - min), min/max = depth_range" if cfg.save_png16 else None,
                "timings": {k: round(v, 4) for k, v in timings.items()},
                "seconds": round(result.seconds, 3),
                "seconds_per_frame": round(result.seconds / max(result.frames, 1), 4),
                "peak_memory": _peak_memory(),
                "versions": _versions(),
                "outputs": [p.name for p in written],
                **(report_extra or {}),
            }
            final = out_dir / f"{stem}_run.json"
            with atomic_path(final) as tmp:
                tmp.write_text(json.dumps(report, indent=2))
            written.append(final)
            progress("write", total_steps, total_steps)
            result.outputs = [p.name for p in written]
            return result
        return PendingOutputs(str(source.path), stream.num_frames, list(result.notes), write, cleanup)
    except BaseException:
        cleanup()
        raise
