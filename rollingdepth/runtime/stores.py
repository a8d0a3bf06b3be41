"""Where a run keeps its intermediate results: in memory, or in a work folder on disk.

The method (:mod:`rollingdepth.runtime.passes`) asks its store (any :class:`Store`) for arrays
by role, reads and writes them by rows (``a[i:j] = x``, ``a[i:j]``, ``read_rows(a, rows)``), so the same code runs a
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

import json
import os
import shutil
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from rollingdepth.errors import InputError
from rollingdepth.runtime.checkpoints import StageState

__all__ = ["DiskStore", "Journal", "MemoryStore", "NpyFile", "ResumeMismatch", "RowLog", "Store", "read_rows",
           "WorkFolder", "work_folders"]

State = TypeVar("State", bound=StageState)

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


class _File:
    """An open file of rows: ``flush`` and ``close``."""

    _file = None

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class NpyFile(_File):
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
        if mode not in ("w+", "r+", "r"):
            raise ValueError(f"mode: expected 'w+', 'r+' or 'r', got {mode!r}")
        if mode == "w+":
            with open(self.path, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.array_shape})
                self.offset = f.tell()
                f.truncate(self.offset + self.row_bytes * self.shape[0])
        else:
            with open(self.path, "rb") as f:
                np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                self.offset = f.tell()
            if tuple(shape) != self.array_shape or np.dtype(dtype) != self.dtype:
                raise ValueError(f"{self.path}: holds {dtype} {tuple(shape)}, expected {self.dtype} {self.array_shape}")
        self._file = open(self.path, "rb" if mode == "r" else "r+b")

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
        self._file.write(memoryview(data.reshape(-1)).cast("B"))  # no bytes copy: GBs pass through here

    def __getitem__(self, key) -> np.ndarray:
        r = self._rows(key)
        out = np.empty((len(r), *self.shape[1:]), self.dtype)
        self._read_into(r.start, out)
        return out[0] if isinstance(key, (int, np.integer)) else out

    def _read_into(self, first: int, out: np.ndarray) -> None:
        """Rows ``first, first + 1, ...`` straight into the contiguous array ``out`` (no copy)."""
        self._file.seek(self.offset + first * self.row_bytes)
        view = memoryview(out.reshape(-1)).cast("B")
        got = self._file.readinto(view)
        while 0 < got < len(view):  # a short read: go on from where it stopped
            more = self._file.readinto(view[got:])
            if not more:
                break
            got += more
        if got != len(view):
            raise OSError(f"{self.path}: file ended {len(view) - got} bytes early")

    def take(self, rows) -> np.ndarray:
        """Rows in the given (any) order; runs of consecutive rows are read at once."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        start = 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            self._read_into(int(rows[start]), out[start:end])
            start = end
        return out


class RowLog(_File):
    """An append-only file of equal rows (``row_shape``, ``dtype``), for arrays whose length
    is not known in advance (the frame latents of a stream)."""

    def __init__(self, path: Path, row_shape, dtype, keep: int = 0):
        """Open ``path`` keeping its first ``keep`` rows (the rest is cut off), or create it."""
        self.path, self.row_shape, self.dtype = Path(path), tuple(row_shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._file = open(self.path, "r+b" if keep and self.path.exists() else "w+b")
        self._file.truncate(keep * self.row_bytes)
        self._file.seek(0, os.SEEK_END)
        self.rows = keep

    def __len__(self) -> int:
        return self.rows

    def append(self, values: np.ndarray) -> slice:
        data = np.ascontiguousarray(values, self.dtype)
        self._file.write(data.tobytes())
        start, self.rows = self.rows, self.rows + len(data)
        return slice(start, self.rows)

    def __getitem__(self, key: slice) -> np.ndarray:
        r = range(*key.indices(self.rows))
        self._file.flush()
        with open(self.path, "rb") as f:
            f.seek(r.start * self.row_bytes)
            data = f.read(len(r) * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(len(r), *self.row_shape).copy()


class _MemoryLog:
    """The in-memory form of :class:`RowLog`: appended chunks."""

    def __init__(self):
        self.chunks: list[np.ndarray] = []
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append(self, values: np.ndarray) -> slice:
        self.chunks.append(np.asarray(values))
        start, self.rows = self.rows, self.rows + len(values)
        return slice(start, self.rows)

    def __getitem__(self, key: slice) -> np.ndarray:
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0][key]

    def flush(self) -> None:
        pass


class Store(Protocol):
    """Where a run keeps its arrays, and what it has completed (for resuming)."""

    kind: str  # "memory" or "disk", in the run report
    resumable: bool  # checkpoints survive the process (a later run resumes from them)
    expected_bytes: int  # what the run will write here, for advice when the disk is full

    def array(self, name: str, shape, dtype=np.float32, row_ndim: int | None = None):
        """A fixed-size array ``name`` (reopened when a checkpoint holds some of its rows)."""

    def rows(self, name: str, row_shape, dtype):
        """An append-only array of rows (``log[a:b]`` reads)."""

    def write(self, array, rows: slice, values) -> None:
        """``array[rows] = values``."""

    def append(self, log, values) -> None:
        """Append ``values`` to a :meth:`rows` array."""

    def checkpoint(self, state: StageState) -> None:
        """Record ``state`` after what it describes is written."""

    def resumed(self, kind: type[State]) -> State | None:
        """The last verified checkpoint of that stage, or None (start it afresh)."""

    def resumed_all(self, kind: type[State]) -> list[State]:
        """Every verified checkpoint of that stage, in order (for stages that checkpoint each
        part of their work apart, e.g. the units of a video)."""

    def keep_maps(self, nbytes: int, output_bytes: int = 0) -> bool:
        """Whether the decoded snippet maps (``nbytes``) can be kept for the merge."""

    def maps_dtype(self, dtype: torch.dtype):
        """The host dtype of decoded maps in a run of ``dtype``."""

    def latents_dtype(self, dtype: torch.dtype):
        """The host dtype of latents in a run of ``dtype``."""

    def output(self, shape):
        """The prediction's array ``[N, H, W]``."""

    def child(self, name: str, fingerprint: dict) -> "Store":
        """A store of the same kind for one part of the run (a shot or a segment): resumable on
        its own; closed by its user, removed with :meth:`remove_child`."""

    def child_output(self, name: str, shape):
        """The prediction of the finished (and closed) child ``name``, read-only, without
        reopening its journal (whose checks would read back all it wrote)."""

    def remove_child(self, name: str) -> None:
        """Drop what the child ``name`` holds."""

    def close(self) -> None:
        """Close every file."""


class MemoryStore:
    """Everything in host memory (NumPy, float32): for clips that fit, e.g. ``pipe(frames)``.
    Nothing is kept after the run, so nothing resumes."""

    kind = "memory"
    resumable = False

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.children: dict[str, MemoryStore] = {}
        self.expected_bytes = 0

    def array(self, name: str, shape, dtype=np.float32, row_ndim: int | None = None) -> np.ndarray:
        """A new array for ``name`` (``row_ndim`` only matters on disk)."""
        self.arrays[name] = np.zeros(shape, dtype)
        return self.arrays[name]

    def rows(self, name: str, row_shape, dtype) -> _MemoryLog:
        """An append-only array of rows (``log.append(values)``, ``log[a:b]``)."""
        return _MemoryLog()

    @staticmethod
    def write(array, rows: slice, values) -> None:
        array[rows] = values

    @staticmethod
    def append(log, values) -> None:
        log.append(values)

    def checkpoint(self, state: StageState) -> None:
        """Nothing to record: a run in memory does not resume."""

    def resumed(self, kind: type[State]) -> State | None:
        return None

    def resumed_all(self, kind: type[State]) -> list[State]:
        return []

    def keep_maps(self, nbytes: int, output_bytes: int = 0) -> bool:
        """Whether decoded snippet maps of ``nbytes`` can be kept: always, here."""
        return True

    def maps_dtype(self, dtype: torch.dtype):
        return np.float32

    def latents_dtype(self, dtype: torch.dtype):
        return np.float32

    def output(self, shape) -> np.ndarray:
        return self.array("output", shape)

    def child(self, name: str, fingerprint: dict) -> "MemoryStore":
        self.children[name] = MemoryStore()
        return self.children[name]

    def child_output(self, name: str, shape) -> np.ndarray:
        return self.children[name].arrays["output"]

    def remove_child(self, name: str) -> None:
        self.children.pop(name, None)

    def close(self) -> None:
        pass


CREATED_BY = "rollingdepth run-video"
JOURNAL = "journal.jsonl"


class ResumeMismatch(ValueError):
    """The work folder belongs to a run with another input or other settings."""

    def __init__(self, workdir: Path, differences: dict):
        self.workdir, self.differences = workdir, differences
        said = "; ".join(f"{k}: {_short(old)} then, {_short(new)} now" for k, (old, new) in differences.items())
        super().__init__(f"{workdir} holds a run of another input or other settings ({said})")


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


class Journal:
    """What a run on disk has completed: an append-only ``journal.jsonl`` in the work folder.

    Line 1 is the header (who made the folder, the fingerprint of the input and of every
    setting that changes the result). Every further line is a checkpoint, appended after the
    data it describes was written: ``{"stage", "state", "ranges": [[file, offset, length,
    crc32], ...]}``. A line cut short by a kill does not parse and is ignored. On opening,
    every checkpoint's ranges are read back and checked; from the first that fails on, the
    checkpoints are dropped (that work is done again) and the file is cut there.
    """

    def __init__(self, workdir: Path, fingerprint: dict):
        self.workdir = Path(workdir)
        self.path = self.workdir / JOURNAL
        self.entries: list[dict] = []
        self.rolled_back: list[str] = []  # stages whose checkpoints failed their checks
        if self.path.exists():
            self._load(fingerprint)
        else:
            self._start(fingerprint)

    def _start(self, fingerprint: dict) -> None:
        header = {"created_by": CREATED_BY, "created": time.time(), "fingerprint": fingerprint}
        with open(self.path, "w") as f:
            f.write(json.dumps(header) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _load(self, fingerprint: dict) -> None:
        lines = self.path.read_text().split("\n")
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            header = {}
        if header.get("created_by") != CREATED_BY:
            raise ValueError(f"{self.workdir}: not a work folder of run-video (no valid {JOURNAL})")
        old = header.get("fingerprint", {})
        differences = {k: (old.get(k), v) for k, v in fingerprint.items() if old.get(k) != v}
        if differences:
            raise ResumeMismatch(self.workdir, differences)
        good, offset = [], len(lines[0]) + 1
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # cut short by a kill
            if not self._verify(entry):
                self.rolled_back.append(entry["stage"])
                break
            good.append(entry)
            offset += len(line) + 1
        self.entries = good
        with open(self.path, "r+") as f:  # later appends follow the last good checkpoint
            f.truncate(offset)

    def _verify(self, entry: dict) -> bool:
        for name, start, length, crc in entry.get("ranges", []):
            try:
                with open(self.workdir / name, "rb") as f:
                    f.seek(start)
                    data = f.read(length)
            except OSError:
                return False
            if len(data) != length or zlib.crc32(data) != crc:
                return False
        return True

    def state(self, stage: str) -> dict | None:
        """The state of the last verified checkpoint of ``stage``."""
        for entry in reversed(self.entries):
            if entry["stage"] == stage:
                return entry["state"]
        return None

    def has_data(self, name: str) -> bool:
        return any(r[0] == name for e in self.entries for r in e.get("ranges", []))

    def record(self, stage: str, state: dict, ranges: list) -> None:
        entry = {"stage": stage, "state": state, "ranges": ranges}
        self.entries.append(entry)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")


@dataclass(frozen=True)
class WorkFolder:
    """A work folder of an unfinished run, as ``--list-work`` shows it."""

    path: Path
    bytes: int
    age_s: float  # since its journal was last written
    stage: str  # the last stage completed ("started": none)
    input: str | None  # the video it is of


def work_folders(folder: Path) -> list[WorkFolder]:
    """The work folders of run-video in ``folder``."""
    found = []
    for path in sorted(Path(folder).glob(".*.rollingdepth-work*")):
        journal = path / JOURNAL
        try:
            lines = journal.read_text().split("\n")
            header = json.loads(lines[0])
        except (OSError, json.JSONDecodeError, IndexError):
            continue
        if header.get("created_by") != CREATED_BY:
            continue
        stage = None
        for line in lines[1:]:
            try:
                stage = json.loads(line)["stage"]
            except (json.JSONDecodeError, KeyError):
                break
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        found.append(WorkFolder(path, size, time.time() - journal.stat().st_mtime, stage or "started",
                                header.get("fingerprint", {}).get("input")))
    return found


class DiskStore:
    """Row-wise ``.npy`` files in ``workdir`` (an existing folder the caller removes), with a
    :class:`Journal` of what is complete, so that a killed run resumes where it stopped.

    ``output_path``: where the prediction goes (default: in ``workdir``). ``budget``: bytes
    the decoded snippet maps may take (default: the volume's free space, less the output and
    a margin of 1 GiB). ``fingerprint``: what must match for a run to resume from this folder
    (a mismatch raises :class:`ResumeMismatch`).
    """

    kind = "disk"
    resumable = True

    def __init__(self, workdir: Path, output_path: Path | None = None, budget: int | None = None,
                 fingerprint: dict | None = None, elsewhere: str = "put the work folder on a larger disk"):
        self.workdir = Path(workdir)
        self.output_path = Path(output_path) if output_path else self.workdir / "prediction.npy"
        self.budget = budget
        self.elsewhere = elsewhere  # how to run on another disk, in the messages of a full one (run-video: its option)
        self.arrays: dict[str, NpyFile | RowLog] = {}
        self.journal = Journal(self.workdir, fingerprint or {})
        self._ranges: list = []  # written since the last checkpoint: [file, offset, length, crc32]
        self.expected_bytes = 0  # what the run will write here (set by the run), for "no space" advice

    def _path(self, name: str) -> Path:
        return self.output_path if name == "output" else self.workdir / f"{name}.npy"

    def array(self, name: str, shape, dtype=np.float32, row_ndim: int | None = None) -> NpyFile:
        """The array ``name``: reopened when a checkpoint holds some of its rows, else new."""
        path = self._path(name)
        array = None
        if path.exists() and self.journal.has_data(path.name):
            try:
                array = NpyFile(path, shape, dtype, mode="r+", row_ndim=row_ndim)
            except ValueError:
                array = None
        if array is None:
            array = NpyFile(path, shape, dtype, row_ndim=row_ndim)
        self.arrays[name] = array
        return array

    def rows(self, name: str, row_shape, dtype) -> RowLog:
        """An append-only array of rows, keeping the rows that checkpoints vouch for."""
        path = self.workdir / f"{name}.bin"
        keep = max((r[1] + r[2] for e in self.journal.entries for r in e.get("ranges", []) if r[0] == path.name),
                   default=0)
        log = RowLog(path, row_shape, dtype, keep=keep // (int(np.prod(row_shape)) * np.dtype(dtype).itemsize))
        self.arrays[name] = log
        return log

    def write(self, array: NpyFile, rows: slice, values) -> None:
        """``array[rows] = values``, remembered (with a checksum) for the next checkpoint."""
        data = np.ascontiguousarray(np.asarray(values, array.dtype))
        array[rows] = data
        start = array.offset + rows.start * array.row_bytes
        self._ranges.append([array.path.name, int(start), int(data.nbytes), zlib.crc32(data)])

    def append(self, log: RowLog, values) -> None:
        data = np.ascontiguousarray(np.asarray(values, log.dtype))
        rows = log.append(data)
        self._ranges.append([log.path.name, int(rows.start * log.row_bytes), int(data.nbytes), zlib.crc32(data)])

    def checkpoint(self, state: StageState) -> None:
        """Record ``state`` after flushing what was written since the last checkpoint."""
        names = {r[0] for r in self._ranges}
        for array in list(self.arrays.values()):  # a copy: the main thread may add arrays meanwhile
            if array.path.name in names:
                array.flush()
        self.journal.record(state.stage, state.to_json(), self._ranges)
        self._ranges = []

    def resumed(self, kind: type[State]) -> State | None:
        """That stage's state at its last verified checkpoint (None: start it afresh)."""
        data = self.journal.state(kind.stage)
        return None if data is None else kind.from_json(data)

    def resumed_all(self, kind: type[State]) -> list[State]:
        """Every verified checkpoint of that stage, in order."""
        return [kind.from_json(e["state"]) for e in self.journal.entries if e["stage"] == kind.stage]

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.workdir).free

    def no_space_error(self) -> InputError:
        """The one line for a full disk: the folder, its free space and about how much more this
        run needs there (it resumes once there is room)."""
        workdir = self.workdir
        free = shutil.disk_usage(workdir if workdir.exists() else workdir.parent).free
        used = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file()) if workdir.exists() else 0
        need = max(self.expected_bytes - used, 0)
        return InputError(
            f"no space left on the disk of {workdir.parent} ({free / 2**30:.1f} GiB free): this video needs about "
            f"{need / 2**30:.1f} GiB more there; free space (or {self.elsewhere}) and run the same "
            f"command again: it resumes where it stopped")

    def keep_maps(self, nbytes: int, output_bytes: int = 0) -> bool:
        """Whether decoded maps of ``nbytes`` fit the budget; warns once when they do not."""
        budget = self.budget if self.budget is not None else self.free_bytes() - output_bytes - DISK_MARGIN
        if nbytes <= budget:
            return True
        warnings.warn(
            f"the decoded snippet maps need {nbytes / 2**30:.1f} GiB in {self.workdir.parent} "
            f"and {max(budget, 0) / 2**30:.1f} GiB can be used: keeping only their latents and decoding every "
            f"snippet frame again in the merge (about 1.5x the decoder work); free {(nbytes - budget) / 2**30:.1f} GiB "
            f"or {self.elsewhere} to avoid it",
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

    def child(self, name: str, fingerprint: dict) -> "DiskStore":
        """A store in the sub-folder ``name`` (created, or resumed when its journal matches
        ``fingerprint``), with this store's budget and advice."""
        folder = self.workdir / name
        folder.mkdir(exist_ok=True)
        return DiskStore(folder, budget=self.budget, fingerprint=fingerprint, elsewhere=self.elsewhere)

    def child_output(self, name: str, shape) -> NpyFile:
        return NpyFile(self.workdir / name / "prediction.npy", shape, np.float32, mode="r")

    def remove_child(self, name: str) -> None:
        shutil.rmtree(self.workdir / name, ignore_errors=True)

    def close(self) -> None:
        """Close every file (the folder itself is the caller's)."""
        for array in self.arrays.values():
            array.close()
