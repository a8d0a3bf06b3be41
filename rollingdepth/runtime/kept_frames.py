"""The input's frames as the run decodes them for the encoder, kept in a file of the video's work
folder, so that the write stage (the side-by-side, the stereo videos, the point clouds) reads them
from there instead of decoding the input a second time (#42, item 5; docs/performance.md, "The
side-by-side's frames: read again or kept?").

Kept only when cheap on disk (:func:`worth_keeping`), and read back only when complete: every frame
the decoder gave went by, in order, exactly as many as the run predicted. Anything else (a frame
of another size, more frames than counted, a full disk, a resumed run that did not decode the
frames) gives ``None``, and the write stage decodes the input again, as it does without keeping.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from rollingdepth.io.output_formats import output_formats
from rollingdepth.runtime.run_config import RunConfig

__all__ = ["KEEP_BYTES", "KEEP_FILE", "KEEP_SHARE", "KeptFrames", "worth_keeping"]

KEEP_BYTES = 1 << 30  # a video's frames are kept when N * H * W * 3 (the input's size) is at most 1 GiB
KEEP_SHARE = 4  # ... and at most a quarter of the work folder's free disk
KEEP_FILE = "kept_frames.u8"  # in the work folder: raw uint8 [N, H, W, 3], removed with it


def worth_keeping(cfg: RunConfig, frames: int, size: tuple[int, int], folder: Path) -> bool:
    """Whether a run of ``frames`` frames of ``size`` (H, W) keeps them in ``folder``: an enabled
    output takes the input's frames, and they fit :data:`KEEP_BYTES` and :data:`KEEP_SHARE`."""
    if not any(fmt.needs_rgb for fmt in output_formats() if fmt.enabled(cfg)):
        return False
    kept = max(frames, 0) * size[0] * size[1] * 3
    if kept <= 0 or kept > KEEP_BYTES:
        return False
    try:
        return kept * KEEP_SHARE <= shutil.disk_usage(folder).free
    except OSError:
        return False


class KeptFrames:
    """uint8 frames ``[H, W, 3]`` written in order, as they pass, to one raw file ``[N, H, W, 3]``
    (plain writes, not a memmap: a full disk raises ``ENOSPC``, which gives up keeping, where a
    memmap's page would kill the process with SIGBUS), and read back in order."""

    def __init__(self, path: Path, size: tuple[int, int], limit: int):
        self.path, self.shape, self.limit = Path(path), (int(size[0]), int(size[1]), 3), limit
        self.kept, self.ended, self.failed = 0, False, False

    @property
    def frame_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 3

    def wrap(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``frames`` passed on unchanged, each kept on the way; ``ended`` once the last has gone by."""
        file = None
        try:
            for frame in frames:
                file = self._keep(file, frame)
                yield frame
            self.ended = True
        finally:
            if file is not None:
                file.close()

    def _keep(self, file: IO[bytes] | None, frame: np.ndarray) -> IO[bytes] | None:
        """``frame`` appended to the file (opened at the first); the file, or None once given up."""
        if self.failed:
            return None
        if frame.shape != self.shape or frame.dtype != np.uint8 or self.kept >= self.limit:
            return self._give_up(file)
        try:
            file = file or open(self.path, "wb")
            file.write(np.ascontiguousarray(frame).data)
        except OSError:  # a full disk, the folder gone: the write stage reads the input again
            return self._give_up(file)
        self.kept += 1
        return file

    def _give_up(self, file: IO[bytes] | None) -> None:
        if file is not None:
            file.close()
        self.discard()

    def discard(self) -> None:
        """No frames kept any more: the file removed, :meth:`read` gives None."""
        self.failed = True
        self.path.unlink(missing_ok=True)

    def read(self, count: int) -> Iterator[np.ndarray] | None:
        """The ``count`` kept frames in order, or None unless exactly ``count`` were kept and the
        frames ended there (a count that differs never shifts a frame: the caller reads the input)."""
        if self.failed or not self.ended or count <= 0 or self.kept != count:
            return None
        try:
            if self.path.stat().st_size != count * self.frame_bytes:
                return None
        except OSError:
            return None
        return self._frames(count)

    def _frames(self, count: int) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as file:
            for _ in range(count):
                frame = np.empty(self.shape, np.uint8)
                if file.readinto(memoryview(frame).cast("B")) != self.frame_bytes:
                    return  # shorter than written: the write stage says the frames fell short
                yield frame
