"""The frame count and rotation an MP4 / MOV file declares, read from its ISO-BMFF boxes (no decoding).

:func:`mp4_declared_frames` reads the top-level ``moov`` box and the first video track's
sample table (``stts``), with the edit list's share when only part of the media is shown;
:func:`mp4_rotation` the track header's display matrix.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Iterator

__all__ = ["mp4_declared_frames", "mp4_rotation"]

_MOOV_LIMIT = 256 * 2**20  # a moov box larger than this is not read (bytes)


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """ISO-BMFF boxes in ``data[start:end]``: ``(type, payload start, payload end)``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, a, b in _boxes(data, start, end):
        if k == kind:
            return a, b
    return None


def _read_moov(path: Path) -> bytes | None:
    """The payload of the file's top-level ``moov`` box (None when there is none)."""
    with open(path, "rb") as f:
        size_total = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size_total:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return None
            size, kind = struct.unpack(">I4s", head[:8])
            header = 8
            if size == 1:
                if len(head) < 16:
                    return None
                size, header = struct.unpack(">Q", head[8:16])[0], 16
            elif size == 0:
                size = size_total - pos
            if size < header:
                return None
            if kind == b"moov":
                if size > _MOOV_LIMIT:
                    return None
                f.seek(pos + header)
                payload = f.read(size - header)
                return payload if len(payload) == size - header else None
            pos += size
    return None


def _full_box_times(data: bytes, start: int, timescale_first: bool) -> tuple[int, int]:
    """``(timescale, duration)`` of an mvhd / mdhd box (``timescale_first``) or ``(0, duration)``
    of a tkhd box, for version 0 and 1 boxes."""
    version = data[start]
    if timescale_first:
        if version == 1:
            return struct.unpack(">IQ", data[start + 20 : start + 32])
        return struct.unpack(">II", data[start + 12 : start + 20])
    if version == 1:
        return 0, struct.unpack(">Q", data[start + 28 : start + 36])[0]
    return 0, struct.unpack(">I", data[start + 20 : start + 24])[0]


def _video_track(moov: bytes):
    """``(trak start, trak end, mdia, stts table [(count, delta), ...])`` of the first video track;
    None without one or without a readable sample table."""
    for kind, a, b in _boxes(moov):
        if kind != b"trak":
            continue
        mdia = _child(moov, a, b, b"mdia")
        hdlr = mdia and _child(moov, *mdia, b"hdlr")
        if not hdlr or moov[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        stbl = _child(moov, *_child(moov, *mdia, b"minf") or (0, 0), b"stbl")
        stts = stbl and _child(moov, *stbl, b"stts")
        if not stts:
            return None
        (entries,) = struct.unpack(">I", moov[stts[0] + 4 : stts[0] + 8])
        table = moov[stts[0] + 8 : stts[0] + 8 + 8 * entries]
        if len(table) != 8 * entries:
            return None
        values = struct.unpack(f">{2 * entries}I", table)
        return a, b, mdia, list(zip(values[0::2], values[1::2]))
    return None


def mp4_declared_frames(path: Path) -> tuple[int, int] | None:
    """``(frames, tolerance)`` of the first video track: its sample table (exact), or, when
    its edit list shows only part of the media, that part's share of the samples rounded
    down (tolerance 1: the edit may start or end inside a frame)."""
    moov = _read_moov(path)
    track = moov and _video_track(moov)
    if not track:
        return None
    a, b, mdia, table = track
    samples = sum(count for count, _ in table)
    if samples == 0:
        return None  # fragmented MP4: the samples are declared in the fragments
    mvhd = _child(moov, 0, len(moov), b"mvhd")
    movie_scale = _full_box_times(moov, mvhd[0], True)[0] if mvhd else 0
    mdhd = _child(moov, *mdia, b"mdhd")
    tkhd = _child(moov, a, b, b"tkhd")
    if mdhd and tkhd and movie_scale:
        media_scale, media_duration = _full_box_times(moov, mdhd[0], True)
        shown = _full_box_times(moov, tkhd[0], False)[1] / movie_scale  # seconds the edit list shows
        media = media_duration / media_scale if media_scale else 0.0
        if media > 0 and 0 < shown < media:
            return math.floor(samples * shown / media), 1
    return samples, 0


def mp4_rotation(path: Path) -> int:
    """Counter-clockwise degrees (0, 90, 180 or 270) the first video track's ``tkhd`` matrix turns
    its frames for display (as FFmpeg's display matrix; 0 when unknown, flipped or not a right angle)."""
    moov = _read_moov(path)
    track = moov and _video_track(moov)
    tkhd = track and _child(moov, track[0], track[1], b"tkhd")
    if not tkhd:
        return 0
    start = tkhd[0] + (52 if moov[tkhd[0]] == 1 else 40)  # the matrix, after the version's time fields
    a, b, _, c, d = struct.unpack(">5i", moov[start : start + 20])
    if a * d - b * c <= 0:
        return 0  # mirrored (or degenerate): not a rotation
    degrees = -math.degrees(math.atan2(b, a))
    turn = round(degrees / 90)
    return (turn * 90) % 360 if abs(degrees - turn * 90) < 1 else 0
