"""Reading and writing videos and frame folders; atomic output files.

Videos are probed and decoded with PyAV (:mod:`rollingdepth.io.av_video`; its wheels bundle
FFmpeg's libraries): frame ``i`` is the first video stream's ``i``-th displayed frame in
presentation order, found by its timestamp when reading starts at it, and probing decodes
nothing (the exact rate is :attr:`VideoSource.rate`, a ``Fraction``). Frames come out as
uint8 RGB whatever the source (grayscale, alpha, 10-bit), with rotation metadata applied;
every displayed frame comes out once (no frames duplicated or dropped to fill a constant
frame rate). Videos are written through imageio-ffmpeg's bundled ffmpeg, at an exact rate.

Images: turned as their EXIF orientation says (as Pillow's ``ImageOps.exif_transpose``);
grayscale becomes R = G = B; an alpha channel is dropped (the colour channels are kept as
stored, not composited onto a background); 16-bit images are scaled to 8 bits,
``round(v * 255 / 65535)``. A sequence's images must have one size, checked from their
headers when it is opened (:func:`load_source`).

Truncated videos: the frames whose data is in the file are compared with the count the container declares
(:attr:`VideoSource.container_frames`); fewer is a :class:`TruncatedVideoWarning` naming both
numbers, or an :class:`InputError` with ``strict=True``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import re
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rollingdepth.errors import EmptyVideoError, InputError  # noqa: F401  (re-exported)
from rollingdepth.io.av_video import (InexactSeekWarning, PictureFormat, StreamFacts, audio_of, ffmpeg_error, is_hd,
                                      packet_times, probe_stream, read_frames, retime_video)
from rollingdepth.io.mp4_boxes import mp4_declared_frames

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InexactSeekWarning",
    "InputError",
    "TruncatedVideoWarning",
    "AudioSpan",
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


_ffmpeg_error = ffmpeg_error  # the one-line InputError for what FFmpeg says about a file


_COPY_AUDIO = ("aac", "mp3", "alac", "ac3", "eac3")  # codecs an MP4 holds as they are; others become AAC


@dataclass(frozen=True)
class AudioSpan:
    """The sound of a source from ``start`` seconds (of its file's own clock) for ``duration``
    seconds, as an output video carries it: ``copy`` keeps the packets as they are, else AAC."""

    path: Path
    start: float
    duration: float
    copy: bool

    def add_to(self, video: Path) -> None:
        """Put this sound beside the picture of the MP4 ``video`` (stream copies, no re-encoding of
        the picture), in place."""
        import imageio_ffmpeg

        joined = video.with_name(f".{video.stem}.sound{video.suffix}")
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(video),
               "-ss", f"{self.start:.6f}", "-t", f"{self.duration:.6f}", "-i", str(self.path),
               "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "copy" if self.copy else "aac",
               "-movflags", "+faststart", str(joined)]
        try:
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
            if done.returncode != 0:
                raise InputError(f"{self.path}: its sound could not be added to {video.name} "
                                 f"({done.stderr.strip()[-300:]}); it can be left out (run-video's audio option)")
            os.replace(joined, video)
        finally:
            joined.unlink(missing_ok=True)


@dataclass
class VideoSource:
    """One input: a video file or an ordered list of image files (frames of one video)."""

    path: Path  # the video file, or the folder / pattern the images came from
    images: list[Path] | None = None
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)  # (H, W) of decoded frames
    frame_count: int = 0  # exact for images; for videos, the displayed frames whose data is in the file
    container_frames: int | None = None  # videos: the frame count the container declares (None: unknown)
    frame_seconds: float | None = None  # videos of a constant frame rate: seconds per frame (1 / rate)
    rate: Fraction | None = None  # videos: the exact frame rate (24000/1001 stays so); the mean one when variable
    variable_rate: bool = False  # videos: frames last different times
    time_base: Fraction | None = None  # videos: the unit of ``frame_times``
    frame_times: Sequence[int] | None = field(default=None, repr=False)  # videos: index -> pts (None: not known yet)
    times_exact: bool = field(default=False, repr=False)  # ``frame_times`` read from the packets, not computed
    seek_failed: bool = field(default=False, repr=False)  # a frame came with an unexpected pts: read from the start
    sample_aspect: Fraction = Fraction(1)  # videos: a displayed pixel's width over its height (16/15: PAL 4:3)
    picture: PictureFormat | None = None  # videos: pixel format, bit depth and transfer from the headers (.hdr)

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

    @property
    def seekable(self) -> bool:
        """A video whose frames are found by timestamp (not decoded from frame 0 up to the one wanted)."""
        return self.is_video and not self.seek_failed and (self.frame_times is not None or not self.times_exact)

    def audio(self, start: int, count: int) -> AudioSpan | None:
        """The sound that plays with frames ``start .. start + count - 1``, or None (images, no sound)."""
        found = audio_of(self.path) if self.is_video and self.rate else None
        if found is None:
            return None
        codec, file_start = found
        table = self._frame_table(False)
        first = float(table[start] * self.time_base) if table is not None and self.time_base else start / self.rate
        duration = float(count / self.rate)
        times = self.frame_times_of(start, count)
        if times is not None:  # a variable rate: as long as those frames are shown
            duration = float(times[0][-1] * times[1])
        return AudioSpan(self.path, max(0.0, first - file_start), duration, codec in _COPY_AUDIO)

    def frame_times_of(self, start: int, count: int) -> tuple[list[int], Fraction] | None:
        """A variable-rate video's frames ``start .. start + count - 1``: ``(their pts from the
        first's, one more for where the last one ends; the time base)``; None at a constant rate
        (or when the frames' times are unknown)."""
        if not (self.is_video and self.variable_rate and self.time_base):
            return None
        table = self._frame_table(True)
        if table is None or count <= 0 or start + count > len(table):
            return None
        times = [t - table[start] for t in table[start : start + count + 1]]
        if len(times) == count:  # the video's last frame: as long as the one before it
            times.append(times[-1] + (times[-1] - times[-2] if count > 1 else round(1 / (self.rate * self.time_base))))
        return times, self.time_base

    def _frame_table(self, exact: bool) -> Sequence[int] | None:
        """index -> pts; ``exact``: read from the packets (once, then kept). None: no seeking."""
        if self.seek_failed:
            return None
        if not self.times_exact and (exact or self.frame_times is None):
            self.frame_times, self.times_exact = packet_times(self.path), True
        return self.frame_times

    def _seek_fallback(self, reason: str) -> None:
        self.seek_failed = True  # one note, then every read of this video decodes from its start
        warnings.warn(reason, InexactSeekWarning, stacklevel=5)

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
        yield from read_frames(self.path, start, count, self._frame_table, self._seek_fallback)

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


_EXIF_ORIENTATION = 0x0112
_ORIENTED = {  # EXIF orientation -> how the stored pixels become the displayed ones (as Pillow's exif_transpose)
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise (a phone held upright)
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
    8: lambda a: np.rot90(a, 1),  # turned 90 degrees counter-clockwise
}


def image_header(path: Path) -> tuple[tuple[int, int], int] | None:
    """``((H, W) as displayed, EXIF orientation 1..8)`` from the file's header, without decoding
    its pixels; None when Pillow cannot read it (the size is then the decoded image's)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            width, height = image.size
    except Exception:  # not Pillow's format, a decompression-bomb guard, a damaged header: decode it
        return None
    orientation = orientation if orientation in _ORIENTED else 1
    return ((width, height) if orientation >= 5 else (height, width)), orientation


def _read_image(path: Path) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` as displayed: EXIF orientation applied, grey repeated, alpha
    dropped, 16 bits scaled to 8."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # the pixels as stored (no orientation applied)
    if data is None:
        raise InputError(f"{path}: not a readable image")
    if data.dtype == np.uint16:
        data = (data.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif data.dtype != np.uint8:
        raise InputError(f"{path}: unsupported image type {data.dtype} (8- or 16-bit images only)")
    if data.ndim == 3 and data.shape[2] in (1, 2):  # grey (+ alpha)
        data = data[..., 0]
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    elif data.ndim != 3 or data.shape[2] not in (3, 4):
        raise InputError(f"{path}: unsupported image layout {data.shape}")
    else:
        data = data[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
    header = image_header(path)
    if header is not None and header[1] != 1:
        data = _ORIENTED[header[1]](data)
    return np.ascontiguousarray(data)


def _read_video_frames(path: Path, start: int = 0, count: int = 0) -> Iterator[np.ndarray]:
    """Frames ``start ..`` (at most ``count``, 0 = all) of a video file not probed before."""
    return VideoSource(path=Path(path)).frames(start, count)


def probe_video(path: Path, strict: bool = False) -> VideoSource:
    """Frame rate, size and frame count of a video file, without decoding (``InputError`` if unreadable).

    ``frame_count`` counts the displayed frames whose data is in the file (an MP4's index, else
    its packets); ``container_frames`` is what the container declares (see
    :func:`container_frame_count`). Fewer frames than declared warns
    (:class:`TruncatedVideoWarning`, both numbers in the message), or with ``strict`` raises
    ``InputError``.
    """
    facts = probe_stream(path)
    source = VideoSource(path=path, fps=float(facts.rate), size=facts.size, frame_count=facts.frames,
                         rate=facts.rate, variable_rate=facts.variable_rate, time_base=facts.time_base,
                         frame_times=facts.times, times_exact=facts.times_exact, sample_aspect=facts.sample_aspect,
                         picture=facts.picture)
    source.frame_seconds = None if facts.variable_rate else float(1 / facts.rate)
    declared = container_frame_count(path, facts)
    if declared is not None:
        source.container_frames, tolerance = declared
        frames = source.frame_count
        if frames > 0 and source.missing_frames > tolerance:
            message = (
                f"{path}: the container declares {source.container_frames} frames but only {frames} decode "
                f"(truncated or damaged file)"
            )
            if strict:
                raise InputError(f"{message}; strict mode refuses it")
            warnings.warn(f"{message}; using the {frames} that decode", TruncatedVideoWarning, stacklevel=2)
    return source


# ----------------------------------------------------------------------------- declared frame count
_MP4_EXTENSIONS = (".mp4", ".mov", ".m4v", ".3gp", ".3g2")


def container_frame_count(path: Path, facts: StreamFacts | None = None) -> tuple[int, int] | None:
    """``(frames the container declares for the video, tolerance)``, or None when unknown.

    MP4 / MOV: the first video track's sample table (``stts``): exact (tolerance 0); when its
    edit list shows only part of the media, that part's share (tolerance 1). Other containers,
    when the video is the only stream: duration x frame rate from the header, rounded
    (tolerance 1). With other streams (e.g. audio) the container's duration is not the
    video's: None. GIF (delays in 1/100 s, so no exact frame rate): None.
    """
    path = Path(path)
    if path.suffix.lower() in _MP4_EXTENSIONS:
        try:
            return mp4_declared_frames(path)
        except (OSError, ValueError, TypeError, struct.error):
            return None
    if path.suffix.lower() == ".gif" or facts is None or facts.variable_rate:
        return None
    if not facts.duration or facts.duration <= 0 or facts.streams != 1:
        return None
    return round(facts.duration * facts.rate), 1


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image as displayed (EXIF orientation applied): from its header where Pillow
    reads it, else decoded."""
    header = image_header(path)
    return header[0] if header is not None else _read_image(path).shape[:2]


def _image_source(path: Path, images: list[Path]) -> VideoSource:
    """An image sequence: its first image decoded (readable?), every other one's size checked from
    its header (not decoded): one that differs from the first is an ``InputError`` naming both,
    before any model loads."""
    images = sorted(images, key=natural_key)
    size = _read_image(images[0]).shape[:2]
    for image in images[1:]:
        other = _image_size(image)
        if other != size:
            raise InputError(f"{path}: {image.name} is {other[1]}x{other[0]} pixels but {images[0].name} is "
                             f"{size[1]}x{size[0]}; all images of a sequence need one size")
    return VideoSource(path=path, images=images, fps=30.0, size=size, frame_count=len(images))


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


def exact_rate(fps: float | Fraction) -> Fraction:
    """``fps`` as a fraction: a float becomes the nearest one with a denominator up to 1001
    (29.97002997 -> 30000/1001, 12.0 -> 12); ``ValueError`` unless it is positive."""
    rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps: {fps} is not a positive frame rate")
    return rate


def picture_tags(width: int, height: int) -> tuple[str, str]:
    """``(matrix for ffmpeg's scale filter, the colour tag)`` an output video of this size is
    converted with and tagged as: BT.709 at HD sizes and above (what players assume there),
    BT.601 (``smpte170m``) below (:func:`rollingdepth.io.av_video.is_hd`); limited range either way."""
    return ("bt709", "bt709") if is_hd(width, height) else ("bt601", "smpte170m")


class VideoWriter:
    """H.264 / yuv420p video, frame by frame (odd sizes padded to even by edge pixels), at
    exactly ``fps`` (a ``Fraction`` such as 24000/1001 is kept; see :func:`exact_rate`).

    Colour: RGB becomes limited-range (tv) YUV with the BT.709 matrix at HD sizes and above,
    BT.601 below, and the file is tagged so (matrix, primaries, transfer, range:
    :func:`picture_tags`), so players convert it back with the matrix it was made with.
    ``sample_aspect`` (a pixel's width over its height; None or 1: square) is tagged as the
    stream's sample aspect ratio, the pixels kept as they are (an anamorphic source's frames
    show at its display aspect). ``times`` (``(pts from 0, one more than the frames: where the
    last one ends; their time base)``, :meth:`VideoSource.frame_times_of`): the frames are shown
    at those times, a variable rate's own, rather than ``fps``'s (the packets retimed when the
    picture is complete, :func:`rollingdepth.io.av_video.retime_video`).

    ``quality`` is x264's CRF; ``speed`` its preset. ``veryfast`` at CRF 14 is as faithful as
    ``medium`` at CRF 18 (the side-by-side's input half and the colour videos alike) for about
    a third of the CPU time and a third more bytes (``benchmarks/bench_encoding.py``,
    ``docs/performance.md``); ``veryfast`` at CRF 18 drifts further from the input.
    """

    def __init__(self, path: Path, fps: float | Fraction, size: tuple[int, int], quality: int = 14,
                 speed: str = "veryfast", audio: AudioSpan | None = None, sample_aspect: Fraction | None = None,
                 times: tuple[Sequence[int], Fraction] | None = None):
        import imageio_ffmpeg

        rate = exact_rate(fps)
        self.height, self.width = size
        self.out_h, self.out_w = self.height + self.height % 2, self.width + self.width % 2
        self.frames = 0
        self.path, self.audio, self.times = Path(path), audio, times
        matrix, tag = picture_tags(self.out_w, self.out_h)
        aspect = Fraction(sample_aspect or 1).limit_denominator(65535)
        picture = (f"scale=out_color_matrix={matrix}:out_range=tv,format=yuv420p,"  # converted with the tagged matrix
                   f"setparams=colorspace={tag}:color_primaries={tag}:color_trc={tag}:range=tv,"
                   f"setsar={aspect.numerator}/{aspect.denominator}")
        self._gen = imageio_ffmpeg.write_frames(
            str(path),
            (self.out_w, self.out_h),
            fps=float(rate),
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
            input_params=["-r", f"{rate.numerator}/{rate.denominator}"],  # after imageio's rounded -r: ffmpeg takes the last
            output_params=["-vf", picture, "-colorspace", tag, "-color_primaries", tag, "-color_trc", tag,
                           "-color_range", "tv", "-crf", str(quality), "-preset", speed, "-movflags", "+faststart"],
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
        """End the picture (the sound, if any, is added by leaving the ``with`` block without an error)."""
        self._gen.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        if exc[0] is None and self.times is not None and self.frames:
            retime_video(self.path, self.times[0][: self.frames + 1], self.times[1], self.frames)
        if exc[0] is None and self.audio is not None and self.frames:
            self.audio.add_to(self.path)
