"""Shots of a video: hard cuts found in its frames, or read from an editor's cut list.

A *cut* is the number of the first frame of a new shot (frame 0 always starts the first
shot and is not a cut). :func:`shots_from_cuts` turns cuts and a frame count into
:class:`Shot` s. :func:`detect_cuts` finds hard cuts in a stream of frames, looking only at
small downscaled copies (the video is never held in memory); :func:`read_cut_list` reads cut
frame numbers or timecodes from a text/CSV file or a CMX3600 EDL. See docs/shots.md.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

__all__ = [
    "FOUND_BY",
    "DetectorSettings",
    "Shot",
    "cuts_from_shots",
    "detect_cuts",
    "frame_distance",
    "frame_signature",
    "parse_timecode",
    "read_cut_list",
    "shots_from_cuts",
    "validate_cuts",
]

FoundBy = Literal["start", "auto", "cut list"]
FOUND_BY: tuple[str, ...] = ("start", "auto", "cut list")


# ----------------------------------------------------------------------------- shots and cuts
@dataclass(frozen=True)
class Shot:
    """Frames ``first .. first + count - 1`` of a video; ``found_by``: how its start was found."""

    first: int
    count: int
    found_by: FoundBy

    @property
    def stop(self) -> int:
        """One past the last frame."""
        return self.first + self.count


def validate_cuts(cuts: Iterable[int], frame_count: int, name: str = "cuts") -> list[int]:
    """``cuts`` as a list of ints, checked: sorted, unique, in ``1 .. frame_count - 1``."""
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    out = [int(c) for c in cuts]
    for i, cut in enumerate(out):
        if not 1 <= cut < frame_count:
            raise ValueError(f"{name}: cut at frame {cut} is outside frames 1..{frame_count - 1}")
        if i and cut <= out[i - 1]:
            problem = "repeated" if cut == out[i - 1] else "not in increasing order"
            raise ValueError(f"{name}: cut at frame {cut} is {problem} (after {out[i - 1]})")
    return out


def shots_from_cuts(cuts: Iterable[int], frame_count: int, found_by: FoundBy = "auto",
                    name: str = "cuts") -> list[Shot]:
    """The shots of a ``frame_count``-frame video cut at ``cuts``; the first is found by "start"."""
    if found_by not in FOUND_BY:
        raise ValueError(f"found_by must be one of {FOUND_BY}, got {found_by!r}")
    starts = [0, *validate_cuts(cuts, frame_count, name)]
    stops = [*starts[1:], frame_count]
    return [Shot(a, b - a, "start" if i == 0 else found_by) for i, (a, b) in enumerate(zip(starts, stops))]


def cuts_from_shots(shots: Sequence[Shot]) -> list[int]:
    """The cuts of ``shots``, which must cover frames 0 .. N-1 in order without gaps."""
    stop = 0
    for i, shot in enumerate(shots):
        if shot.first != stop or shot.count < 1:
            raise ValueError(f"shots: shot {i} ({shot.first}, {shot.count} frames) does not follow on frame {stop}")
        stop = shot.stop
    return [shot.first for shot in shots[1:]]


# ----------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class DetectorSettings:
    """Settings of :func:`detect_cuts` (see docs/shots.md for what each does)."""

    thumb_width: int = 64  # frames are compared as copies this wide
    min_colour: float = 0.3  # a cut changes the colour histograms by at least this (0..1) ...
    min_layout: float = 0.08  # ... or the 16x9 brightness layout by at least this
    ratio: float = 3.0  # ... and this many times the neighbours' changes (their lower quartile)
    window: int = 4  # neighbours on each side (changes between distinct pictures)
    flash_frames: int = 6  # a change undone within this many frames is a flash, not a cut (0.25 s at 24 fps)
    hold_span: int = 3  # neighbours are looked for up to this many times ``window`` frames away (pictures held for threes)
    min_shot_frames: int = 1  # no cut closer than this to the previous one

    def __post_init__(self) -> None:
        for field in ("thumb_width", "window", "min_shot_frames", "hold_span"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1, got {getattr(self, field)}")
        if self.flash_frames < 0:
            raise ValueError(f"flash_frames must be at least 0, got {self.flash_frames}")
        for field in ("min_colour", "min_layout"):
            if not 0.0 < getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must be in (0, 1], got {getattr(self, field)}")
        if self.ratio < 1.0:
            raise ValueError(f"ratio must be at least 1, got {self.ratio}")

    @property
    def floors(self) -> np.ndarray:
        """``[2]``: the least colour and layout change of a cut."""
        return np.array([self.min_colour, self.min_layout])


_BINS = (16, 8, 16)  # hue, saturation, value relative to the frame's mean
_RANGES = (180.0, 256.0, 2.5)  # OpenCV's 8-bit hue and saturation; value / mean value
_BLACK = 10.0  # changes next to a frame darker than this mean value (0..255: no picture left) count less
_BAR = 24  # rows and columns at the edges whose brightest pixel is below this are letterbox bars
_HELD = (0.02, 0.004)  # a colour and layout change below both: the same picture again (held, duplicated)
_HELD_RATIO = 3.0  # ... or one this many times smaller than a change next to it (a repeat with noise)
_FADE_STEP = 0.9  # in a fade, each frame's brightness is at most this times the next one's (the darker side's)
_DARK = 48.0  # ... and the fade's darkest frame is below this mean value
_GRID = (16, 9)  # the layout: mean brightness of 16 x 9 cells
_NHIST = sum(_BINS)


def frame_signature(frame: np.ndarray, width: int = 64) -> np.ndarray:
    """What :func:`frame_distance` compares, from a small copy of a uint8 RGB ``[H, W, 3]`` frame.

    ``[40 + 144 + 1]``: histograms of hue, saturation and value divided by the frame's mean
    value, each summing to 1;
    the layout (16 x 9 cells' value / the mean value); the mean value (0..255). Letterbox and
    pillarbox bars (edge rows and columns with no pixel brighter than 24) are left out.
    Scaling a frame's brightness (a fade, a dark scene) changes neither histograms nor layout.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    h, w = frame.shape[:2]
    tw = min(width, w)
    th = max(1, round(h * tw / w))
    small = _without_bars(cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA))  # [th', tw', 3]
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float64)  # [th', tw', 3]
    mean = float(hsv[..., 2].mean())
    hsv[..., 2] /= max(mean, 1.0)
    layout = cv2.resize(hsv[..., 2], _GRID, interpolation=cv2.INTER_AREA)  # [9, 16]
    hsv = hsv.reshape(-1, 3)  # [th * tw, 3]
    hists = []
    for c, (bins, rng) in enumerate(zip(_BINS, _RANGES)):
        idx = np.minimum(hsv[:, c] * bins / rng, bins - 1).astype(np.int64)
        hists.append(np.bincount(idx, minlength=bins) / len(idx))
    return np.concatenate([*hists, layout.ravel(), [mean]])


def _without_bars(small: np.ndarray) -> np.ndarray:
    """``small [h, w, 3]`` less its letterbox or pillarbox bars (all of it when it is all dark)."""
    bright = small.max(axis=2) >= _BAR  # [h, w]
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    if len(rows) == 0:
        return small
    return small[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def frame_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[2]``: the colour change (mean over H, S, V of the histograms' total variation
    distance, 0..1) and the layout change (mean absolute difference), both times
    ``min(1, mean / 10) ** 2`` of the darker frame (next to a black frame the picture is gone:
    its histograms are noise)."""
    colour = 0.5 * np.abs(a[:_NHIST] - b[:_NHIST]).sum() / len(_BINS)
    layout = np.abs(a[_NHIST:-1] - b[_NHIST:-1]).mean()
    return np.array([colour, layout]) * min(1.0, min(a[-1], b[-1]) / _BLACK) ** 2


def detect_cuts(frames: Iterable[np.ndarray], settings: DetectorSettings | None = None) -> list[int]:
    """Frame numbers where a new shot starts after a hard cut, from uint8 RGB ``[H, W, 3]`` frames.

    Frame ``t`` is a cut when its change from frame ``t - 1`` in colour or in layout
    (:func:`frame_distance`) is at least that kind's floor and ``ratio`` times the lower
    quartile of the ``window`` changes on each side (a dissolve, fade or camera move spreads
    its change over many frames: no single one stands out), and it is not a flash: frame
    ``t`` does not return to one of the few frames before ``t - 1``, nor does a frame after
    ``t`` return to frame ``t - 1``, and not a fade (the brightness falls steadily into frame
    ``t - 1`` or rises steadily from frame ``t``, to or from the dark). The neighbours are the
    changes between distinct pictures: a picture held (animation on twos or threes, duplicated
    frames) repeats without a change, and such non-changes are skipped. Streams: only a few
    signatures are kept, never the frames.
    """
    s = settings or DetectorSettings()
    span = s.window * s.hold_span  # how far neighbours are looked for
    reach = max(span, s.flash_frames)  # frames looked ahead before deciding
    sigs: deque[np.ndarray] = deque(maxlen=max(s.flash_frames, _FADE_RUN) + reach + 2)  # frames t - 1 - flash .. t + reach
    dists: deque[np.ndarray] = deque(maxlen=span + reach + 1)  # d[t - span] .. d[t + reach], each [2]
    cuts: list[int] = []
    count = 0
    for frame in frames:
        sig = frame_signature(frame, s.thumb_width)
        if sigs:
            dists.append(frame_distance(sigs[-1], sig))
        sigs.append(sig)
        count += 1
        if count - 1 - reach >= 1 and _is_cut(count - 1 - reach, count, sigs, dists, cuts, s):
            cuts.append(count - 1 - reach)
    for t in range(max(1, count - reach), count):  # the last frames, with less look-ahead
        if _is_cut(t, count, sigs, dists, cuts, s):
            cuts.append(t)
    return cuts


def _is_cut(t: int, count: int, sigs: deque[np.ndarray], dists: deque[np.ndarray], cuts: list[int],
            s: DetectorSettings) -> bool:
    """Whether frame ``t`` starts a shot; ``sigs[j - count]`` is frame j's, ``dists[j - count]`` is ``d[j]``."""
    if cuts and t - cuts[-1] < s.min_shot_frames:
        return False
    score = dists[t - count]  # [2]
    fired = score >= s.floors  # [2]
    oldest = max(1, count - len(dists))
    span = s.window * s.hold_span
    before = _changes(dists, count, range(t - 1, max(oldest, t - span) - 1, -1), s.window)
    after = _changes(dists, count, range(t + 1, min(count, t + 1 + span)), s.window)
    for side in (before, after):
        if side:
            fired &= score >= s.ratio * np.percentile(np.stack(side), 25, axis=0)  # not gradual
    if not fired.any():
        return False
    close = np.where(fired, score / s.ratio, np.inf)  # [2] "the same picture again"
    prev, cur = sigs[t - 1 - count], sigs[t - count]
    if _fading(sigs, count, t):
        return False
    for k in range(1, s.flash_frames + 1):
        if t + k < count and (frame_distance(prev, sigs[t + k - count]) < close).all():
            return False  # a flash starts at t
        if t - 1 - k >= max(0, count - len(sigs)) and (frame_distance(cur, sigs[t - 1 - k - count]) < close).all():
            return False  # a flash ends at t
    return True


def _changes(dists: deque[np.ndarray], count: int, frames: range, most: int) -> list[np.ndarray]:
    """The first ``most`` changes ``d[j]`` for ``j`` in ``frames`` that are not a held picture."""
    out = []
    for j in frames:
        if not _held(dists, count, j):
            out.append(dists[j - count])
            if len(out) == most:
                break
    return out


def _held(dists: deque[np.ndarray], count: int, j: int) -> bool:
    """Whether ``d[j]`` shows the same picture again: no change (under :data:`_HELD`), or, with
    noise or grain, under a :data:`_HELD_RATIO` th of a change 1 or 2 frames away in both
    measures (animation on twos or threes: the new pictures' changes tower over the repeats')."""
    d = dists[j - count]
    if (d < _HELD).all():
        return True
    near = [dists[k - count] for k in (j - 2, j - 1, j + 1, j + 2) if count - len(dists) <= k < count]
    return bool(near) and (d * _HELD_RATIO < np.max(near, axis=0)).all()


_FADE_RUN = 3  # frames of steadily changing brightness that make a fade


def _fading(sigs: deque[np.ndarray], count: int, t: int) -> bool:
    """Whether the brightness falls steadily over the frames up to ``t - 1`` into the dark, or
    rises steadily from a dark frame ``t`` (a fade out or in, not a cut)."""
    first = max(0, count - len(sigs))
    mean = lambda j: sigs[j - count][-1]  # noqa: E731
    down = [mean(j) for j in range(t - _FADE_RUN, t) if j >= first]  # ... into t - 1
    up = [mean(j) for j in range(t, t + _FADE_RUN) if j < count]  # t ...
    falls = len(down) == _FADE_RUN and down[-1] < _DARK and all(b <= _FADE_STEP * a for a, b in zip(down, down[1:]))
    rises = len(up) == _FADE_RUN and up[0] < _DARK and all(a <= _FADE_STEP * b for a, b in zip(up, up[1:]))
    return falls or rises


# ----------------------------------------------------------------------------- cut lists
_TC_FRAMES = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})[:;](\d{1,3})$")  # HH:MM:SS:FF
_TC_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")  # [HH:]MM:SS[.mmm]
_SECONDS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*s$", re.IGNORECASE)  # 12.5s
_EDL_EVENT = re.compile(r"^\s*\d{1,6}\s+\S+\s+\S+\s+\S+")  # 001  REEL  V  C ...
_EDL_TC = re.compile(r"\b\d{2}:\d{2}:\d{2}[:;]\d{2}\b")


def parse_timecode(text: str, fps: float, drop_frame: bool = False) -> int:
    """A frame number from ``123``, ``HH:MM:SS:FF``, ``[HH:]MM:SS.mmm`` or ``12.5s`` at ``fps``.

    ``HH:MM:SS;FF`` (or any ``HH:MM:SS:FF`` with ``drop_frame``: an EDL under ``FCM: DROP
    FRAME``) is drop-frame timecode, at 30000/1001 or 60000/1001 fps: its labels skip frames
    0 and 1 (0 to 3 at 59.94) of every minute but each tenth, so that it keeps to the clock."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    token = text.strip()
    if token.isdigit():
        return int(token)
    if m := _TC_FRAMES.match(token):
        h, mi, se, ff = (int(g) for g in m.groups())
        nominal = round(fps)  # timecode counts frames at the nominal rate (30 for 29.97)
        if ff >= nominal or mi >= 60 or se >= 60:
            raise ValueError(f"timecode {token!r} is out of range at {fps:g} fps")
        frames = ((h * 60 + mi) * 60 + se) * nominal + ff
        if ";" in token or drop_frame:
            return frames - _dropped(token, fps, h * 60 + mi, se, ff)
        return frames
    if m := _TC_CLOCK.match(token):
        h, mi, se = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
        if mi >= 60 or se >= 60:
            raise ValueError(f"time {token!r} is out of range")
        return round(((h * 60 + mi) * 60 + se) * fps)
    if m := _SECONDS.match(token):
        return round(float(m.group(1)) * fps)
    raise ValueError(f"cannot read {token!r} as a frame number, HH:MM:SS:FF, HH:MM:SS.mmm or seconds (12.5s)")


def _dropped(token: str, fps: float, minutes: int, se: int, ff: int) -> int:
    """The frame labels drop-frame timecode skipped before ``token`` (``minutes`` from 0)."""
    per_minute = {30: 2, 60: 4}.get(round(fps))
    if per_minute is None or abs(fps * 1.001 - round(fps)) > 0.01:
        raise ValueError(f"drop-frame timecode {token!r} needs 30000/1001 or 60000/1001 fps, not {fps:g}")
    if se == 0 and ff < per_minute and minutes % 10:
        raise ValueError(f"drop-frame timecode {token!r} does not exist (its label is skipped)")
    return per_minute * (minutes - minutes // 10)


def read_cut_list(path: str | Path, fps: float, frame_count: int) -> list[Shot]:
    """The shots of a ``frame_count``-frame video at ``fps`` from the cut list at ``path``.

    A text/CSV file: one cut per line, in the line's first field (fields split by ``,`` or
    tabs); ``#`` starts a comment; a cut at frame 0 is ignored. Or a CMX3600 EDL (a
    ``TITLE:`` line or event lines): each video event's record-in (audio-only events are no
    cuts), counted from the timeline's start: the whole hour at or before the first event
    (01:00:00:00, the editors' default, for a first event at 01:00:00:00 or after a gap of
    black at the start); ``FCM: DROP FRAME`` makes the timecodes after it drop-frame.
    Anything unreadable raises one ValueError naming the file and the line.
    """
    path = Path(path)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cut list {path}: cannot read it ({err})") from None
    is_edl = any(line.strip().upper().startswith("TITLE:")
                 or (_EDL_EVENT.match(line) and len(_EDL_TC.findall(line)) == 4) for line in lines)
    reader = _edl_cuts if is_edl else _text_cuts
    numbered = reader(path, lines, fps)  # [(line number, frame)]
    if is_edl:  # events in record order; two lines of one dissolve share a record-in
        first_line: dict[int, int] = {}
        for lineno, frame in numbered:
            first_line.setdefault(frame, lineno)
        numbered = sorted(((n, f) for f, n in first_line.items()), key=lambda x: x[1])
    prev = 0
    cuts = []
    for lineno, frame in numbered:
        where = f"cut list {path}, line {lineno}"
        if frame == 0 and not cuts:
            continue
        if frame >= frame_count:
            raise ValueError(f"{where}: frame {frame} is past the video's last frame {frame_count - 1}")
        if frame <= prev:
            problem = "repeats" if frame == prev else "comes before"
            raise ValueError(f"{where}: frame {frame} {problem} the previous cut at frame {prev}")
        cuts.append(frame)
        prev = frame
    return shots_from_cuts(cuts, frame_count, "cut list", name=f"cut list {path}")


def _text_cuts(path: Path, lines: Sequence[str], fps: float) -> list[tuple[int, int]]:
    """(line number, frame) of each cut of a text/CSV cut list; a first line of words is a header."""
    out = []
    for lineno, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        field = re.split(r"[,\t]", text, maxsplit=1)[0].strip().strip('"')
        try:
            out.append((lineno, parse_timecode(field, fps)))
        except ValueError as err:
            if not out and re.fullmatch(r"[A-Za-z _()\-]+", field):
                continue  # a header such as "frame" or "Timecode In"
            raise ValueError(f"cut list {path}, line {lineno}: {err}") from None
    return out


def _edl_cuts(path: Path, lines: Sequence[str], fps: float) -> list[tuple[int, int]]:
    """(line number, record-in frame counted from the timeline's start) of each video event of an EDL."""
    out = []
    drop = False
    for lineno, line in enumerate(lines, 1):
        if line.strip().upper().startswith("FCM:"):
            drop = "NON" not in line.upper() and "DROP" in line.upper()
        if not _EDL_EVENT.match(line):
            continue  # TITLE, FCM, comments (*), notes
        tcs = _EDL_TC.findall(line)
        if len(tcs) != 4:
            raise ValueError(f"cut list {path}, line {lineno}: an EDL event needs 4 timecodes "
                             f"(source in/out, record in/out), found {len(tcs)}")
        if not _is_video(line):
            continue  # audio only: no cut in the picture
        try:
            out.append((lineno, parse_timecode(tcs[2], fps, drop), (int(tcs[2][:2]), drop)))
        except ValueError as err:
            raise ValueError(f"cut list {path}, line {lineno}: {err}") from None
    if not out:
        raise ValueError(f"cut list {path}: an EDL without video events")
    hour, first_drop = min(out, key=lambda e: e[1])[2]
    start = parse_timecode(f"{hour:02d}:00:00:00", fps, first_drop)  # the whole hour at or before its first event
    return [(n, f - start) for n, f, _ in out]


def _is_video(event: str) -> bool:
    """Whether an EDL event line edits the picture: its track field names V (``V``, ``A/V``,
    ``AA/V``) or both (``B``); ``A``, ``A2``, ``AA`` are audio only."""
    track = event.split()[2].upper()
    return "V" in track or track == "B"
