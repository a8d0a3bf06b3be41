"""Depth as a lossless 16-bit grayscale video, for editors and compositors.

FFV1 (FFmpeg's lossless intra codec, version 3) in Matroska, pixel format ``gray16le``: every
frame's 16-bit values come back exactly (DaVinci Resolve, Nuke and ffmpeg read it). The values
map to depth as the PNG16 frames' do (:func:`~rollingdepth.io.visualize.to_uint16`:
``value = vmin + v / 65535 * (vmax - vmin)``, recorded in run.json). Frames are written with the
source's exact rate (a fraction) as their time base, one frame per tick; or, for a variable-rate
source, each at its own time (its pts in the source's time base: FFV1 frames are all intra, so
the packets need no reordering; Matroska keeps them to the millisecond).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rollingdepth.errors import InputError

__all__ = ["DEPTH_VIDEO_CODEC", "DepthVideoWriter", "read_depth_video"]

DEPTH_VIDEO_CODEC = "ffv1"
_PIX_FMT = "gray16le"


class DepthVideoWriter:
    """Writes uint16 ``[H, W]`` frames to ``path`` at ``rate`` frames per second (a context manager).

    ``times``: ``(pts from 0, at least one per frame; their time base)``, a variable-rate
    source's frame times (:meth:`rollingdepth.io.video_io.VideoSource.frame_times_of`): frame
    ``i`` is shown at ``times[0][i]`` instead of ``i / rate`` (``rate`` is then the mean rate)."""

    def __init__(self, path: Path, rate: Fraction, size: tuple[int, int],
                 times: tuple[Sequence[int], Fraction] | None = None):
        if rate <= 0:
            raise ValueError(f"rate: {rate} frames per second; it must be positive")
        if times is not None and (any(b <= a for a, b in zip(times[0], times[0][1:])) or times[1] <= 0):
            raise ValueError("times: frame times must increase, in a positive time base")
        self.path, self.rate, self.size, self.times = Path(path), Fraction(rate), size, times
        self._container = self._stream = None
        self._count = 0
        self._shown: dict[int, int] = {}  # a packet's pts -> its frame's index

    def __enter__(self) -> "DepthVideoWriter":
        import av

        self._container = av.open(str(self.path), "w", format="matroska")
        stream = self._container.add_stream(DEPTH_VIDEO_CODEC, rate=self.rate)
        stream.width, stream.height = self.size[1], self.size[0]
        stream.pix_fmt = _PIX_FMT
        stream.codec_context.time_base = 1 / self.rate if self.times is None else Fraction(self.times[1])
        stream.options = {"level": "3", "slicecrc": "1"}
        self._stream = stream
        return self

    def write(self, frame: np.ndarray) -> None:
        """One frame, uint16 ``[H, W]`` at the writer's size."""
        import av

        if frame.dtype != np.uint16 or frame.shape != tuple(self.size):
            raise ValueError(f"frame: {frame.dtype} {frame.shape}; expected uint16 {tuple(self.size)}")
        if self.times is not None and self._count >= len(self.times[0]):
            raise ValueError(f"frame {self._count}: no time given for it ({len(self.times[0])} times)")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=_PIX_FMT)
        pts = self._count if self.times is None else int(self.times[0][self._count])  # one tick per frame, or its own
        picture.pts, picture.time_base = pts, self._stream.codec_context.time_base
        self._count += 1
        for packet in self._stream.encode(picture):
            self._mux(packet)

    def _mux(self, packet) -> None:
        """A packet into the file; with ``times``, lasting until the next frame's time."""
        if self.times is not None and packet.pts is not None:
            times, index = self.times[0], self._shown.setdefault(packet.pts, len(self._shown))
            if index + 1 < len(times):
                packet.duration = int(times[index + 1]) - int(times[index])
        self._container.mux(packet)

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                for packet in self._stream.encode():
                    self._mux(packet)
        finally:
            self._container.close()


def read_depth_video(path: Path) -> Iterator[np.ndarray]:
    """The frames of a 16-bit depth video, uint16 ``[H, W]`` each, in order."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable depth video ({' '.join(str(exc).split())})") from None
    with container:
        stream = container.streams.video[0]
        if stream.codec_context.pix_fmt not in (_PIX_FMT, "gray16be"):
            raise InputError(f"{path}: a {stream.codec_context.pix_fmt} video, not 16-bit grayscale depth")
        for frame in container.decode(stream):
            yield frame.to_ndarray(format=_PIX_FMT)
