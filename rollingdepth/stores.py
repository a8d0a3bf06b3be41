"""Where a run keeps its intermediate results: in memory, or in a work folder on disk.

The method (:mod:`rollingdepth.driver`) asks its store for arrays by role and reads and writes
them by rows (``a[i:j] = x``, ``a[i:j]``, ``read_rows(a, rows)``), so the same code runs a
short clip in memory and a long video with bounded host memory:

- :class:`MemoryStore`: NumPy arrays (``RollingDepthPipeline.__call__``);
- :class:`DiskStore`: row-wise ``.npy`` files in a work folder (run-video). The decoded
  snippet maps are kept there for the merge (each snippet frame decoded once) while the
  folder's volume has room for them; otherwise only the snippets' latents are kept and the
  merge decodes them again (one warning says why and how much space would avoid it).

Roles: ``latents`` (snippet latents, only when maps are not kept), ``maps`` (decoded snippet
frames, ``[S, n, H, W]`` per dilation), ``coaligned`` (co-aligned depth before refinement),
``output`` (the prediction ``[N, H, W]``).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = ["DiskStore", "MemoryStore", "NpyFile", "read_rows"]

# Kept free on the work folder's volume beyond what the run itself writes.
DISK_MARGIN = 1 << 30


def read_rows(array, rows: np.ndarray) -> np.ndarray:
    """Rows in the given (any) order, from a NumPy array or an :class:`NpyFile`."""
    if isinstance(array, NpyFile):
        return array.take(rows)
    return array[np.asarray(rows)]


def _np_dtype(dtype: torch.dtype):
    """The host dtype that holds values of ``dtype`` exactly (bf16 as fp32)."""
    return np.float16 if dtype == torch.float16 else np.float32


class NpyFile:
    """A ``.npy`` file read and written by rows with plain file I/O.

    Unlike a memory map, the rows written or read do not stay mapped into the process, so
    they do not count towards its resident memory (the page cache holds them).
    """

    def __init__(self, path: Path, shape, dtype, mode: str = "w+", row_ndim: int | None = None):
        """``row_ndim``: rows are the trailing dims (default: all but the first); e.g. a
        ``[S, n, H, W]`` array written by ``[H, W]`` rows."""
        self.path, self.array_shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        row_ndim = len(self.array_shape) - 1 if row_ndim is None else row_ndim
        self.shape = (int(np.prod(self.array_shape[: len(self.array_shape) - row_ndim], dtype=np.int64)),
                      *self.array_shape[len(self.array_shape) - row_ndim :])
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if mode == "w+":
            with open(self.path, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.array_shape})
                self.offset = f.tell()
                f.truncate(self.offset + self.row_bytes * self.shape[0])
        else:
            with open(self.path, "rb") as f:
                np.lib.format.read_magic(f)
                np.lib.format.read_array_header_1_0(f)
                self.offset = f.tell()
        self._file = open(self.path, "r+b" if mode == "w+" else "rb")

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, key) -> range:
        if isinstance(key, (int, np.integer)):
            start = int(key) if key >= 0 else int(key) + self.shape[0]
            return range(start, start + 1)
        if not isinstance(key, slice):
            raise TypeError("NpyFile takes an int or a slice of rows (or take())")
        r = range(*key.indices(self.shape[0]))
        if r.step != 1:
            raise ValueError("NpyFile slices must be contiguous")
        return r

    def __setitem__(self, key, value) -> None:
        r = self._rows(key)
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype), (len(r), *self.shape[1:])))
        self._file.seek(self.offset + r.start * self.row_bytes)
        self._file.write(data.tobytes())

    def __getitem__(self, key) -> np.ndarray:
        r = self._rows(key)
        self._file.seek(self.offset + r.start * self.row_bytes)
        data = np.frombuffer(self._file.read(len(r) * self.row_bytes), self.dtype).reshape(len(r), *self.shape[1:])
        return data[0].copy() if isinstance(key, (int, np.integer)) else data.copy()

    def take(self, rows) -> np.ndarray:
        """Rows in the given (any) order; runs of consecutive rows are read at once."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        start = 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            out[start:end] = self[int(rows[start]) : int(rows[end - 1]) + 1]
            start = end
        return out

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class MemoryStore:
    """Everything in host memory (NumPy, float32): for clips that fit, e.g. ``pipe(frames)``."""

    kind = "memory"

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape, dtype=np.float32, row_ndim: int | None = None) -> np.ndarray:
        """A new array for ``name`` (``row_ndim`` only matters on disk)."""
        self.arrays[name] = np.zeros(shape, dtype)
        return self.arrays[name]

    def keep_maps(self, nbytes: int, output_bytes: int = 0) -> bool:
        """Whether decoded snippet maps of ``nbytes`` can be kept: always, here."""
        return True

    def maps_dtype(self, dtype: torch.dtype):
        return np.float32

    def latents_dtype(self, dtype: torch.dtype):
        return np.float32

    def output(self, shape) -> np.ndarray:
        return self.array("output", shape)

    def close(self) -> None:
        pass


class DiskStore:
    """Row-wise ``.npy`` files in ``workdir`` (an existing folder the caller removes).

    ``output_path``: where the prediction goes (default: in ``workdir``). ``budget``: bytes
    the decoded snippet maps may take (default: the volume's free space, less the output and
    a margin of 1 GiB).
    """

    kind = "disk"

    def __init__(self, workdir: Path, output_path: Path | None = None, budget: int | None = None,
                 on_output: Callable[[Path], None] | None = None):
        self.workdir = Path(workdir)
        self.output_path = Path(output_path) if output_path else self.workdir / "prediction.npy"
        self.budget = budget
        self.on_output = on_output  # told the output's path once it exists (to clean it up)
        self.arrays: dict[str, NpyFile] = {}

    def array(self, name: str, shape, dtype=np.float32, row_ndim: int | None = None) -> NpyFile:
        path = self.output_path if name == "output" else self.workdir / f"{name}.npy"
        self.arrays[name] = NpyFile(path, shape, dtype, row_ndim=row_ndim)
        if name == "output" and self.on_output is not None:
            self.on_output(path)
        return self.arrays[name]

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.workdir).free

    def keep_maps(self, nbytes: int, output_bytes: int = 0) -> bool:
        """Whether decoded maps of ``nbytes`` fit the budget; warns once when they do not."""
        budget = self.budget if self.budget is not None else self.free_bytes() - output_bytes - DISK_MARGIN
        if nbytes <= budget:
            return True
        warnings.warn(
            f"the decoded snippet maps need {nbytes / 2**30:.1f} GiB in {self.workdir.parent} "
            f"and {max(budget, 0) / 2**30:.1f} GiB can be used: keeping only their latents and decoding every "
            f"snippet frame again in the merge (about 1.5x the decoder work); free {(nbytes - budget) / 2**30:.1f} GiB "
            f"or pass --work-dir on a larger disk to avoid it",
            stacklevel=3,
        )
        return False

    def maps_dtype(self, dtype: torch.dtype):
        """Maps as the decoder made them: float16 in fp16 and bf16 runs (exact for fp16), else float32."""
        return np.float16 if dtype in (torch.float16, torch.bfloat16) else np.float32

    def latents_dtype(self, dtype: torch.dtype):
        return _np_dtype(dtype)

    def output(self, shape) -> NpyFile:
        return self.array("output", shape)

    def close(self) -> None:
        """Close every file (the folder itself is the caller's)."""
        for array in self.arrays.values():
            array.close()
