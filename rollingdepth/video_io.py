"""Reading and writing videos and frame folders; atomic output files.

Video decoding and encoding go through imageio-ffmpeg and its bundled ffmpeg (no system
ffmpeg needed). Frames come out as uint8 RGB whatever the source (grayscale, alpha, 10-bit),
with rotation metadata applied by ffmpeg.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputError",
    "VideoSource",
    "atomic_dir",
    "atomic_path",
    "natural_key",
    "open_source",
    "VideoWriter",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """An input the user gave cannot be used; the message says why, in one line."""


def natural_key(path: str | Path) -> list:
    """Sort key putting ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", str(path))]


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
    frame_count: int = 0  # exact for images; for videos, counted by ffmpeg

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
                yield _read_image(p)
            return
        yield from _read_video_frames(self.path, start, count)

    def read(self, start: int = 0, count: int = 0) -> np.ndarray:
        """All requested frames as uint8 ``[N, H, W, 3]``; ``InputError`` when there are none."""
        frames = list(self.frames(start, count))
        if not frames:
            if start > 0:
                raise InputError(
                    f"{self.path}: --from {start} is beyond the end of the video ({self.frame_count} frames)"
                )
            raise InputError(f"{self.path}: the video has no frames")
        return np.stack(frames)


def _read_image(path: Path) -> np.ndarray:
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise InputError(f"{path}: not a readable image")
    if data.dtype == np.uint16:
        data = (data / 257).round().astype(np.uint8)
    elif data.dtype != np.uint8:
        raise InputError(f"{path}: unsupported image type {data.dtype}")
    if data.ndim == 2:
        return np.repeat(data[..., None], 3, axis=2)
    if data.shape[2] == 4:
        data = data[..., :3]
    return np.ascontiguousarray(data[..., ::-1])  # BGR -> RGB


def _read_video_frames(path: Path, start: int, count: int) -> Iterator[np.ndarray]:
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration, IndexError, AttributeError) as exc:
        raise _ffmpeg_error(path, exc) from None
    width, height = meta["size"]
    try:
        index = 0
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


def probe_video(path: Path) -> VideoSource:
    """Frame rate, size and exact frame count of a video file (``InputError`` if unreadable)."""
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
        gen.close()
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (OSError, RuntimeError, StopIteration, IndexError, AttributeError) as exc:
        raise _ffmpeg_error(path, exc) from None
    width, height = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    return VideoSource(path=path, fps=fps if fps > 0 else 30.0, size=(height, width), frame_count=int(frames))


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


def load_source(entry: Path | tuple[Path, list[Path]]) -> VideoSource:
    """Probe one entry of :func:`open_source` (``InputError`` when it cannot be read)."""
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
    source = probe_video(path)
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
    """H.264 / yuv420p video, frame by frame (odd sizes padded to even by edge pixels)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], quality: int = 18):
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
            output_params=["-crf", str(quality), "-movflags", "+faststart"],
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
