"""Files of the web page (``rollingdepth-app``): one folder per user, kept for a while, and
the checks and conversions of what people upload.

Everything the app writes or serves lives under one root folder (also Gradio's upload
folder): ``users/<random>/run-<n>/`` per user and run, ``sample/`` for the bundled clip, and
Gradio's own upload folders. Runs older than the time to live are removed by a sweeper
thread, and the whole root when the app stops.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from rollingdepth.io.video_io import IMAGE_EXTENSIONS, InputError

__all__ = ["Workspace", "check_not_truncated", "extract_frames", "keep_frames", "kept_frame", "parse_duration",
           "zip_folder"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` -> seconds (``ValueError`` otherwise)."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 600, 30m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def safe_stem(name: str) -> str:
    """A file name stem that is safe as part of output names (letters, digits, ``-_.``)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._") or "video"
    return stem[:80]


class Workspace:
    """The app's root folder: per-user run folders, their time to live, removal at shutdown."""

    def __init__(self, ttl_s: float, parent: str | Path | None = None):
        self.ttl_s = float(ttl_s)
        self.root = Path(tempfile.mkdtemp(prefix="rollingdepth-app-", dir=parent)).resolve()
        self.users = self.root / "users"
        self.users.mkdir()
        self._lock = threading.Lock()
        self._folders: dict[str, Path] = {}  # session -> the user's folder (random name)
        self._active: set[Path] = set()  # run folders of queued or running jobs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ folders
    def user_folder(self, session: str) -> Path:
        """The folder of one browser session; its name is random, not derived from the session."""
        with self._lock:
            folder = self._folders.get(session)
            if folder is None:
                folder = self.users / secrets.token_hex(12)
                self._folders[session] = folder
            folder.mkdir(parents=True, exist_ok=True)
            return folder

    def new_run(self, session: str) -> Path:
        """A fresh run folder of this session, protected from the sweeper until :meth:`release`."""
        user = self.user_folder(session)
        with self._lock:
            run = Path(tempfile.mkdtemp(prefix="run-", dir=user))
            self._active.add(run)
            return run

    def release(self, run: Path) -> None:
        """The job of ``run`` is over; its age counts from now."""
        with self._lock:
            self._active.discard(run)
        if run.exists():
            os.utime(run)

    def contains(self, path: str | Path) -> bool:
        """Whether ``path`` (symlinks resolved) lies inside the root folder."""
        try:
            Path(path).resolve().relative_to(self.root)
            return True
        except (ValueError, OSError):
            return False

    # ------------------------------------------------------------------ time to live
    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove runs and uploads older than the time to live; return what was removed."""
        now = time.time() if now is None else now
        removed = []
        with self._lock:
            active = set(self._active)
        candidates = [p for user in self._children(self.users) for p in self._children(user)]
        candidates += [p for p in self._children(self.root) if p.name not in ("users", "sample")]
        for path in candidates:
            if path in active or any(a.is_relative_to(path) for a in active):
                continue
            if now - _newest_mtime(path) > self.ttl_s:
                _remove(path)
                removed.append(path)
        for user in self._children(self.users):  # user folders left empty
            if not any(user.iterdir()) and now - _newest_mtime(user) > self.ttl_s:
                user.rmdir()
                with self._lock:
                    self._folders = {s: f for s, f in self._folders.items() if f != user}
        return removed

    @staticmethod
    def _children(folder: Path) -> list[Path]:
        try:
            return list(folder.iterdir())
        except OSError:
            return []

    def start_sweeper(self) -> None:
        """Sweep every ``min(ttl / 4, 60)`` seconds in a daemon thread."""
        interval = max(1.0, min(self.ttl_s / 4, 60.0))

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception as exc:  # never let the sweeper die
                    print(f"rollingdepth-app: could not remove old results ({exc})", flush=True)

        self._thread = threading.Thread(target=loop, name="rollingdepth-app-sweeper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the sweeper and remove the whole root folder."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)


def _newest_mtime(path: Path) -> float:
    """The newest modification time of ``path`` and everything below it."""
    newest = 0.0
    try:
        newest = path.stat().st_mtime
        if path.is_dir():
            for sub in path.rglob("*"):
                try:
                    newest = max(newest, sub.stat().st_mtime)
                except OSError:
                    pass
    except OSError:
        pass
    return newest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- uploads
def extract_frames(archive: Path, dest: Path, max_frames: int, max_bytes: int) -> Path:
    """Unpack the images of a zip into ``dest`` (flat, names kept) and return ``dest``.

    Folders inside the zip are flattened; other files (and macOS ``__MACOSX``/``._`` files)
    are ignored. Nothing is written outside ``dest``: only the last part of each name is used.
    """
    name = archive.name
    try:
        with zipfile.ZipFile(archive) as zf:
            members = []
            seen = {}
            for info in zf.infolist():
                base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                if info.is_dir() or not base or base.startswith(".") or "__MACOSX/" in info.filename:
                    continue
                if Path(base).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                if base in seen:
                    raise InputError(f"{name}: two frames are named {base} ({seen[base]} and {info.filename})")
                seen[base] = info.filename
                members.append((info, base))
            if not members:
                raise InputError(
                    f"{name}: the zip holds no images ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})"
                )
            if len(members) > max_frames:
                raise InputError(f"{name}: the zip holds {len(members)} frames; this page takes at most {max_frames}")
            total = sum(info.file_size for info, _ in members)
            if total > max_bytes:
                raise InputError(
                    f"{name}: the frames unpack to {total / 2**20:.0f} MB; this page takes at most {max_bytes / 2**20:.0f} MB"
                )
            dest.mkdir(parents=True, exist_ok=True)
            for info, base in members:
                with zf.open(info) as src, open(dest / base, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile:
        raise InputError(f"{name}: not a readable zip file") from None
    return dest


def check_not_truncated(path: Path, frame_count: int, shown_name: str) -> None:
    """``InputError`` when far fewer frames decode than the file's header announces."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        reader.close()
    except Exception:  # unreadable files are reported by the video source itself
        return
    duration, fps = float(meta.get("duration") or 0), float(meta.get("fps") or 0)
    announced = int(round(duration * fps))
    if announced > 0 and frame_count < 0.9 * announced - 2:
        raise InputError(
            f"{shown_name}: the video is truncated or damaged: only {frame_count} of the {announced} frames "
            f"its header announces can be read"
        )


def zip_folder(folder: Path, target: Path) -> Path:
    """Store the files of ``folder`` in the zip ``target`` (names without the folder)."""
    tmp = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.name}")
    os.replace(tmp, target)
    return target


# ---------------------------------------------------------------------- frames kept for views
def keep_frames(frames: Iterable[np.ndarray], folder: Path, edge: int) -> Path:
    """Store uint8 RGB ``frames`` in ``folder`` as ``000000.jpg`` ..., the longer edge at most
    ``edge`` pixels (for views after the run's input is gone); returns ``folder``."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        h, w = frame.shape[:2]
        scale = min(1.0, edge / max(h, w))
        if scale < 1.0:
            frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return folder


def kept_frame(folder: Path, index: int) -> np.ndarray | None:
    """Frame ``index`` (from 0) of :func:`keep_frames` as uint8 RGB, or None when it is gone."""
    import cv2

    image = cv2.imread(str(folder / f"{index:06d}.jpg"), cv2.IMREAD_COLOR)
    return None if image is None else np.ascontiguousarray(image[..., ::-1])
