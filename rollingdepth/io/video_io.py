"""Reading and writing videos and frame folders; atomic output files.

Video decoding and encoding go through imageio-ffmpeg and its bundled ffmpeg (no system
ffmpeg needed). Frames come out as uint8 RGB whatever the source (grayscale, alpha, 10-bit),
with rotation metadata applied by ffmpeg; every decoded frame comes out once (no frames
duplicated or dropped to fill a constant frame rate).

Images: grayscale becomes R = G = B; an alpha channel is dropped (the colour channels are
kept as stored, not composited onto a background); 16-bit images are scaled to 8 bits,
``round(v * 255 / 65535)``.

Truncated videos: the frames that decode are compared with the count the container declares
(:attr:`VideoSource.container_frames`); fewer is a :class:`TruncatedVideoWarning` naming both
numbers, or an :class:`InputError` with ``strict=True``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rollingdepth.errors import EmptyVideoError, InputError  # noqa: F401  (re-exported)
from rollingdepth.io.mp4_boxes import mp4_declared_frames, mp4_frame_seconds

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputError",
    "TruncatedVideoWarning",
    "VideoSource",
    "atomic_dir",
    "atomic_path",
    "natural_key",
    "open_source",
    "VideoWriter",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class TruncatedVideoWarning(UserWarning):
    """Fewer frames decode than the video's container declares (a truncated or damaged file)."""


def natural_key(path: str | Path) -> list:
    """Sort key putting ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", str(path))]


class _RotationNotice(logging.Filter):
    """imageio-ffmpeg logs a warning whenever decoded frames differ in size from the coded
    ones, which is what honouring rotation metadata does: that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_RotationNotice())


def _ffmpeg_error(path: Path, exc: BaseException) -> InputError:
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "matches no streams" in lowered or "does not contain any stream" in lowered:
        reason = "the file has no video stream: no frames to process"
    elif "invalid data" in lowered or "moov atom not found" in lowered or "could not find codec" in lowered:
        reason = "not a readable video (corrupt, truncated or not a video file)"
    elif "no such file" in lowered:
        reason = "file not found"
    else:
        reason = "ffmpeg could not decode it"
    return InputError(f"{path}: {reason}")


@dataclass
class VideoSource:
    """One input: a video file or an ordered list of image files (frames of one video)."""

    path: Path  # the video file, or the folder / pattern the images came from
    images: list[Path] | None = None
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)  # (H, W) of decoded frames
    frame_count: int = 0  # exact for images; for videos, the frames that decode (counted by ffmpeg)
    container_frames: int | None = None  # videos: the frame count the container declares (None: unknown)
    frame_seconds: float | None = None  # videos of a constant, known frame rate (MP4): seconds per frame, for seeking

    @property
    def missing_frames(self) -> int:
        """How many fewer frames decode than the container declares (0 when unknown)."""
        if self.container_frames is None:
            return 0
        return max(0, self.container_frames - self.frame_count)

    @property
    def stem(self) -> str:
        return self.path.stem if self.images is None else (self.path.name or "frames")

    @property
    def is_video(self) -> bool:
        return self.images is None

    def frames(self, start: int = 0, count: int = 0) -> Iterator[np.ndarray]:
        """Yield uint8 RGB ``[H, W, 3]`` frames from ``start``, at most ``count`` (0 = all)."""
        if self.images is not None:
            stop = len(self.images) if count <= 0 else min(len(self.images), start + count)
            for p in self.images[start:stop]:
                image = _read_image(p)
                if self.size != (0, 0) and image.shape[:2] != tuple(self.size):
                    raise InputError(
                        f"{p}: {image.shape[1]}x{image.shape[0]} pixels, but the sequence's first image "
                        f"has {self.size[1]}x{self.size[0]}; all frames of a sequence need one size"
                    )
                yield image
            return
        yield from _read_video_frames(self.path, start, count, self.frame_seconds)

    def read(self, start: int = 0, count: int = 0) -> np.ndarray:
        """All requested frames as uint8 ``[N, H, W, 3]``; ``InputError`` when there are none."""
        frames = list(self.frames(start, count))
        if not frames:
            if start > 0:
                raise EmptyVideoError(
                    f"{self.path}: start frame {start} is beyond the end of the video ({self.frame_count} frames)"
                )
            raise EmptyVideoError(f"{self.path}: the video has no frames")
        return np.stack(frames)


def _read_image(path: Path) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``: grey repeated, alpha dropped, 16 bits scaled to 8."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise InputError(f"{path}: not a readable image")
    if data.dtype == np.uint16:
        data = (data.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif data.dtype != np.uint8:
        raise InputError(f"{path}: unsupported image type {data.dtype} (8- or 16-bit images only)")
    if data.ndim == 3 and data.shape[2] in (1, 2):  # grey (+ alpha)
        data = data[..., 0]
    if data.ndim == 2:
        return np.repeat(data[..., None], 3, axis=2)
    if data.ndim != 3 or data.shape[2] not in (3, 4):
        raise InputError(f"{path}: unsupported image layout {data.shape}")
    return np.ascontiguousarray(data[..., 2::-1])  # BGR(A) -> RGB, alpha dropped


@functools.lru_cache(maxsize=None)
def _passthrough_args() -> tuple[str, ...]:
    """ffmpeg output options that pass every decoded frame on once, whatever its timestamp.

    Without them ffmpeg's rawvideo pipe holds a constant frame rate and repeats frames where
    timestamps leave a gap (a damaged file gave 25 frames of which 3 were repeats).
    ``-fps_mode`` exists since ffmpeg 5.1; older builds (imageio-ffmpeg 0.5 bundles 4.2) only
    know ``-vsync``, which current builds (9.0 here) reject.
    """
    import imageio_ffmpeg

    try:
        version = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - an unknown build: assume a current one
        version = ""
    match = re.match(r"n?(\d+)\.(\d+)", version)
    if match and (int(match[1]), int(match[2])) < (5, 1):
        return ("-vsync", "passthrough")
    return ("-fps_mode", "passthrough")


def _count_decoded_frames(path: Path) -> int:
    """The frames of the first video stream that decode, with the options used for reading."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-progress", "pipe:1",
           "-i", str(path), "-map", "0:v:0", *_passthrough_args(), "-f", "null", "-"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    counts = re.findall(r"^frame=\s*(\d+)\s*$", proc.stdout, flags=re.MULTILINE)
    if not counts:
        raise RuntimeError(proc.stderr[-2000:] or f"ffmpeg exited with {proc.returncode}")
    return int(counts[-1])


def _read_video_frames(path: Path, start: int, count: int, frame_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Frames ``start ..`` of a video file. With ``frame_seconds`` (a constant frame rate) ffmpeg
    seeks to half a frame before frame ``start`` (``-ss`` before ``-i``: it decodes from the
    keyframe before and drops the frames before that time), else every frame before ``start``
    is decoded and dropped here."""
    import imageio_ffmpeg

    seek = []
    if start > 0 and frame_seconds:
        seek, skipped = ["-ss", f"{(start - 0.5) * frame_seconds:.6f}"], start
    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", input_params=seek,
                                         output_params=["-map", "0:v:0", *_passthrough_args()])
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration, IndexError, AttributeError) as exc:
        raise _ffmpeg_error(path, exc) from None
    width, height = meta["size"]
    try:
        index = skipped if seek else 0
        produced = 0
        while True:
            try:
                raw = next(gen)
            except StopIteration:
                return
            except (OSError, RuntimeError) as exc:
                if produced or index:
                    return  # a truncated tail: keep what decoded
                raise _ffmpeg_error(path, exc) from None
            if index >= start:
                yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
                produced += 1
                if count > 0 and produced >= count:
                    return
            index += 1
    finally:
        gen.close()


def probe_video(path: Path, strict: bool = False) -> VideoSource:
    """Frame rate, size and exact frame count of a video file (``InputError`` if unreadable).

    ``frame_count`` is what decodes; ``container_frames`` what the container declares (see
    :func:`container_frame_count`). Fewer frames decoding than declared warns
    (:class:`TruncatedVideoWarning`, both numbers in the message), or with ``strict`` raises
    ``InputError``.
    """
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
        gen.close()
        frames = _count_decoded_frames(path)
    except (OSError, RuntimeError, StopIteration, IndexError, AttributeError) as exc:
        raise _ffmpeg_error(path, exc) from None
    width, height = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    source = VideoSource(path=path, fps=fps if fps > 0 else 30.0, size=(height, width), frame_count=int(frames))
    declared = container_frame_count(path, meta)
    if declared is not None:
        source.container_frames, tolerance = declared
        if tolerance == 0 and declared[0] == frames and Path(path).suffix.lower() in _MP4_EXTENSIONS:
            source.frame_seconds = _frame_seconds(path)  # every declared frame decodes: seeking is safe
        if frames > 0 and source.missing_frames > tolerance:
            message = (
                f"{path}: the container declares {source.container_frames} frames but only {frames} decode "
                f"(truncated or damaged file)"
            )
            if strict:
                raise InputError(f"{message}; strict mode refuses it")
            warnings.warn(f"{message}; using the {frames} that decode", TruncatedVideoWarning, stacklevel=2)
    return source


def _frame_seconds(path: Path) -> float | None:
    try:
        return mp4_frame_seconds(path)
    except (OSError, ValueError, TypeError, struct.error):
        return None


# ----------------------------------------------------------------------------- declared frame count
_MP4_EXTENSIONS = (".mp4", ".mov", ".m4v", ".3gp", ".3g2")


def container_frame_count(path: Path, meta: dict | None = None) -> tuple[int, int] | None:
    """``(frames the container declares for the video, tolerance)``, or None when unknown.

    MP4 / MOV: the first video track's sample table (``stts``): exact (tolerance 0); when its
    edit list shows only part of the media, that part's share (tolerance 1). Other containers, when ffmpeg reports the video
    as the only stream: duration x frame rate from the header, rounded (tolerance 1). With
    other streams (e.g. audio) the container's duration is not the video's: None. GIF
    (delays in 1/100 s, so no exact frame rate): None.
    """
    path = Path(path)
    if path.suffix.lower() in _MP4_EXTENSIONS:
        try:
            return mp4_declared_frames(path)
        except (OSError, ValueError, TypeError, struct.error):
            return None
    if path.suffix.lower() == ".gif" or meta is None:
        return None
    duration, fps = float(meta.get("duration") or 0.0), float(meta.get("fps") or 0.0)
    if duration <= 0 or fps <= 0 or _stream_count(path) != 1:
        return None
    return round(duration * fps), 1


def _stream_count(path: Path) -> int:
    """How many streams ffmpeg lists in the file's header (0 when it cannot tell)."""
    import imageio_ffmpeg

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    return len(re.findall(r"^\s*Stream #\d+:\d+", proc.stderr, flags=re.MULTILINE))


def _image_source(path: Path, images: list[Path]) -> VideoSource:
    images = sorted(images, key=natural_key)
    first = _read_image(images[0])
    return VideoSource(path=path, images=images, fps=30.0, size=first.shape[:2], frame_count=len(images))


def _list_file(path: Path) -> list[Path]:
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        entries.append(p if p.is_absolute() else (path.parent / p))
    return entries


def open_source(spec: str | Path) -> list[Path | tuple[Path, list[Path]]]:
    """Resolve INPUT to a list of videos (paths) or image sequences ``(name, images)``.

    INPUT may be a video file, a folder of videos, a folder of images (one video), a ``.txt``
    list of paths (``#`` comments and blank lines ignored) or a glob of images.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?[") and not path.exists():
        matches = sorted((Path(p) for p in _glob(text)), key=natural_key)
        images = [m for m in matches if m.suffix.lower() in IMAGE_EXTENSIONS]
        videos = [m for m in matches if m.suffix.lower() in VIDEO_EXTENSIONS]
        if images:  # named after their folder, like a folder of images
            return [(images[0].parent, images)]
        if videos:
            return list(videos)
        raise InputError(f"{text}: the pattern matches no images or videos")
    if not path.exists():
        raise InputError(f"{text}: no such file or folder")
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file()), key=natural_key)
        videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        if videos:
            return videos
        if images:
            return [(path, images)]
        raise InputError(f"{text}: the folder holds no videos or images")
    if path.suffix.lower() == ".txt":
        entries = _list_file(path)
        if not entries:
            raise InputError(f"{text}: the list names no videos")
        return entries
    return [path]


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(os.path.expanduser(pattern))


def load_source(entry: Path | tuple[Path, list[Path]], strict: bool = False) -> VideoSource:
    """Probe one entry of :func:`open_source` (``InputError`` when it cannot be read).

    ``strict``: a video of which fewer frames decode than its container declares is an
    ``InputError`` rather than a :class:`TruncatedVideoWarning` (see :func:`probe_video`).
    """
    if isinstance(entry, tuple):
        return _image_source(*entry)
    path = entry
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        items = open_source(path)
        if len(items) == 1 and isinstance(items[0], tuple):
            return _image_source(*items[0])
        raise InputError(f"{path}: a folder of videos inside a list; list the videos themselves")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _image_source(path.parent / path.stem, [path])
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    source = probe_video(path, strict=strict)
    if source.frame_count == 0:
        raise InputError(f"{path}: the video has no frames")
    return source


# ----------------------------------------------------------------------------- writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside ``final``; rename it to ``final`` only on success."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield a temporary folder beside ``final``; it replaces ``final`` only on success."""
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class VideoWriter:
    """H.264 / yuv420p video, frame by frame (odd sizes padded to even by edge pixels).

    ``quality`` is x264's CRF; ``speed`` its preset. ``veryfast`` at CRF 14 is as faithful as
    ``medium`` at CRF 18 (the side-by-side's input half and the colour videos alike) for about
    a third of the CPU time and a third more bytes (``benchmarks/bench_encoding.py``,
    ``docs/performance.md``); ``veryfast`` at CRF 18 drifts further from the input.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int], quality: int = 14, speed: str = "veryfast"):
        import imageio_ffmpeg

        self.height, self.width = size
        self.out_h, self.out_w = self.height + self.height % 2, self.width + self.width % 2
        self.frames = 0
        self._gen = imageio_ffmpeg.write_frames(
            str(path),
            (self.out_w, self.out_h),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-crf", str(quality), "-preset", speed, "-movflags", "+faststart"],
        )
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB ``[H, W, 3]`` frame."""
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame of size {frame.shape[:2]}, writer expects {(self.height, self.width)}")
        if (self.out_h, self.out_w) != (self.height, self.width):
            frame = np.pad(frame, ((0, self.out_h - self.height), (0, self.out_w - self.width), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        self._gen.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
