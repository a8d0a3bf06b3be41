"""Depth as a lossless 16-bit grayscale video, for editors and compositors.

FFV1 (FFmpeg's lossless intra codec, version 3) in Matroska, pixel format ``gray16le``: every
frame's 16-bit values come back exactly (DaVinci Resolve, Nuke and ffmpeg read it). The values
map to depth as the PNG16 frames' do (:func:`~rollingdepth.io.visualize.to_uint16`:
``value = vmin + v / 65535 * (vmax - vmin)``, recorded in run.json). Frames are written with the
source's exact rate (a fraction) as their time base, one frame per tick.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from rollingdepth.errors import InputError

__all__ = ["DEPTH_VIDEO_CODEC", "DepthVideoWriter", "read_depth_video"]

DEPTH_VIDEO_CODEC = "ffv1"
_PIX_FMT = "gray16le"


class DepthVideoWriter:
    """Writes uint16 ``[H, W]`` frames to ``path`` at ``rate`` frames per second (a context manager)."""

    def __init__(self, path: Path, rate: Fraction, size: tuple[int, int]):
        if rate <= 0:
            raise ValueError(f"rate: {rate} frames per second; it must be positive")
        self.path, self.rate, self.size = Path(path), Fraction(rate), size
        self._container = self._stream = None
        self._count = 0

    def __enter__(self) -> "DepthVideoWriter":
        import av

        self._container = av.open(str(self.path), "w", format="matroska")
        stream = self._container.add_stream(DEPTH_VIDEO_CODEC, rate=self.rate)
        stream.width, stream.height = self.size[1], self.size[0]
        stream.pix_fmt = _PIX_FMT
        stream.codec_context.time_base = 1 / self.rate  # one tick per frame
        stream.options = {"level": "3", "slicecrc": "1"}
        self._stream = stream
        return self

    def write(self, frame: np.ndarray) -> None:
        """One frame, uint16 ``[H, W]`` at the writer's size."""
        import av

        if frame.dtype != np.uint16 or frame.shape != tuple(self.size):
            raise ValueError(f"frame: {frame.dtype} {frame.shape}; expected uint16 {tuple(self.size)}")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=_PIX_FMT)
        picture.pts, picture.time_base = self._count, self._stream.codec_context.time_base
        self._count += 1
        for packet in self._stream.encode(picture):
            self._container.mux(packet)

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
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
