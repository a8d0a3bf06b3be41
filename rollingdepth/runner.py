"""Running the pipeline on one video and writing its outputs (used by the ``run-video`` command).

Every output file is written under a temporary name and renamed when complete; the
``{stem}_run.json`` report is written last, so its presence marks a finished video.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .config import RunConfig
from .video_io import InputError, VideoSource, VideoWriter, atomic_dir, atomic_path
from .visualize import SBS_GAP, colorize, side_by_side, to_uint16

__all__ = ["VideoResult", "expected_outputs", "load_pipeline", "outputs_complete", "process_video"]

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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_pipeline(checkpoint: str, dtype: str, device: str | None):
    """Load a checkpoint folder or Hub id; ``InputError`` with a way out when it fails."""
    from .rollingdepth_pipeline import RollingDepthPipeline

    path = Path(checkpoint).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise InputError(f"checkpoint {checkpoint}: the folder is not a RollingDepth checkpoint (no model_index.json)")
        try:
            return RollingDepthPipeline.load(str(path), dtype=dtype, device=device)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise InputError(f"checkpoint {checkpoint}: could not be loaded ({_one_line(exc)})") from None
    if not _HUB_ID.match(checkpoint):
        raise InputError(
            f"checkpoint {checkpoint!r}: no such folder, and not a Hub id (owner/name); pass -c PATH to a checkpoint folder"
        )
    try:
        return RollingDepthPipeline.load(checkpoint, dtype=dtype, device=device)
    except Exception as exc:  # network, auth, missing repo: all mean the same to the user
        raise InputError(
            f"checkpoint {checkpoint!r} is not a local folder and could not be loaded from the Hugging Face Hub "
            f"({_one_line(exc)[:200]}); download it (huggingface-cli download {checkpoint} --local-dir DIR) "
            f"and pass -c DIR"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` to ``size`` (area filter when shrinking)."""
    import cv2

    if frames.shape[1:3] == tuple(size):
        return frames
    interp = cv2.INTER_AREA if size[0] < frames.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=interp) for f in frames])


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    text = str(exc).lower()
    return isinstance(exc, oom_types) or "out of memory" in text or "can't allocate memory" in text


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
    """Predict depth for one video and write every requested output (``report_extra`` goes into run.json)."""
    import torch

    started = time.perf_counter()
    timings = {}
    stem = source.stem
    result = VideoResult(name=str(source.path))

    t0 = time.perf_counter()
    frames = source.read(cfg.start_frame, cfg.frame_count)  # [N, H, W, 3] uint8
    timings["read"] = time.perf_counter() - t0
    result.frames = int(frames.shape[0])

    device = pipe.unet.device
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    try:
        out = pipe(frames, generator=generator, callback=progress, **cfg.pipeline_kwargs())
    except Exception as exc:
        if _is_out_of_memory(exc):
            raise RuntimeError(_oom_advice(pipe, frames.shape, cfg)) from None
        raise
    timings.update(out.timings)
    auto = out.settings.get("num_view_auto")
    if auto:
        result.notes.append(f"{stem}: --snippet-lengths auto chose {auto['num_view']} ({auto['reason']})")

    t0 = time.perf_counter()
    depth = out.depth  # [N, h, w]
    if cfg.restore_res:
        depth = pipe.resize_depth(depth, tuple(frames.shape[1:3]))
    size = depth.shape[1:]
    vmin, vmax = float(depth.min()), float(depth.max())
    fps = cfg.output_fps or source.fps
    written = []
    n = depth.shape[0]
    total_steps = n * (len(cfg.cmaps) + int(cfg.save_sbs)) + 1
    step = 0

    def tick(k=1):
        nonlocal step
        step += k
        progress("write", step, total_steps)

    if cfg.save_npy:
        final = out_dir / f"{stem}_pred.npy"
        with atomic_path(final) as tmp:
            np.save(tmp, depth.astype(np.float32))
        written.append(final)
    tick()
    for cmap in cfg.cmaps:
        final = out_dir / f"{stem}_{cmap}.mp4"
        with atomic_path(final) as tmp:
            with VideoWriter(tmp, fps, size) as writer:
                for frame in depth:
                    writer.write(colorize(frame, cmap, vmin, vmax))
                    tick()
        written.append(final)
    if cfg.save_sbs:
        final = out_dir / f"{stem}_rgbd.mp4"
        rgb = _resize_frames(frames, size)
        with atomic_path(final) as tmp:
            with VideoWriter(tmp, fps, (size[0], 2 * size[1] + SBS_GAP)) as writer:
                for image, frame in zip(rgb, depth):
                    writer.write(side_by_side(image, colorize(frame, cfg.cmaps[0], vmin, vmax)))
                    tick()
        written.append(final)
    if cfg.save_snippets:
        final = out_dir / f"{stem}_snippets.npz"
        with atomic_path(final) as tmp:
            arrays = {f"snippets_{i}": s for i, s in enumerate(out.snippets)}
            np.savez(tmp, dilations=np.array(out.settings["dilations"]),
                     snippet_lengths=np.array(out.settings["snippet_lengths"]), **arrays)
        written.append(final)
    if cfg.save_png16:
        import cv2

        final = out_dir / f"{stem}_depth16"
        with atomic_dir(final) as tmp:
            for i, frame in enumerate(depth):
                if not cv2.imwrite(str(tmp / f"{i:06d}.png"), to_uint16(frame, vmin, vmax)):
                    raise OSError(f"could not write {final / f'{i:06d}.png'}")
        written.append(final)
    timings["write"] = time.perf_counter() - t0

    result.seconds = time.perf_counter() - started
    report = {
        "input": str(source.path),
        "frames": result.frames,
        "input_fps": source.fps,
        "output_fps": fps,
        "output_size": list(size),
        "settings": {**cfg.to_dict(), **out.settings, "seed": cfg.seed},
        "coalign_loss": out.coalign_loss,
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
