"""The first video stream of a file, probed and decoded by timestamp with PyAV (FFmpeg's libraries).

A frame's index is its place in presentation order among the stream's displayed frames,
counted from the first: FFmpeg's demuxers apply edit lists, and frames they mark discarded
are not displayed. A table maps index -> pts (in the stream's ``time_base``): computed for a
constant-rate MP4 (first pts + i x frame duration, checked as frames come), else the sorted
pts of the stream's packets, read without decoding (:func:`packet_times`).

:func:`read_frames` seeks to the keyframe at or before frame ``start``'s pts and decodes on,
dropping frames by pts until it: exact with B-frames, open GOPs (frames shown before the
keyframe they follow in decoding are never taken), edit lists, video starting after the
sound, variable frame rates. A frame that comes with another pts than the table's is never
taken for the wanted one: decoding starts again from frame 0, counting frames, with one
:class:`InexactSeekWarning`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from rollingdepth.errors import InputError

__all__ = ["InexactSeekWarning", "PictureFormat", "StreamFacts", "ffmpeg_error", "packet_times", "probe_stream",
           "read_frames", "retime_video"]

_MOV_FORMAT = "mov"  # FFmpeg's demuxer for MP4 / MOV / M4V / 3GP: a complete sample index in the header


class InexactSeekWarning(UserWarning):
    """A frame came with another timestamp than expected: the video is read from its start instead."""


class _UnexpectedFrame(Exception):
    """A decoded frame's pts is not the one the table gives for its index."""


def ffmpeg_error(path: Path, exc: BaseException) -> InputError:
    """One ``InputError`` line for what FFmpeg (the library or the program) said about ``path``."""
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


def open_video(path: Path):
    """``(container, first video stream)``; ``InputError`` when unreadable or without video."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ffmpeg_error(path, exc) from None
    if not container.streams.video:
        container.close()
        raise ffmpeg_error(path, RuntimeError("does not contain any stream"))
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def audio_of(path: Path) -> tuple[str, float] | None:
    """``(codec name, the container's start in seconds)`` of the file's first audio stream, or None."""
    import av

    try:
        with contextlib.closing(av.open(str(path), metadata_errors="ignore")) as container:
            if not container.streams.audio:
                return None
            start = container.start_time / 1e6 if container.start_time is not None else 0.0
            return container.streams.audio[0].codec_context.name, start
    except (av.FFmpegError, OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- probing
_TRANSFERS = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
              10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
              16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}  # AVColorTransferCharacteristic, FFmpeg's names
_HDR_TRANSFERS = {"smpte2084": "PQ", "arib-std-b67": "HLG"}


@dataclass(frozen=True)
class PictureFormat:
    """The coded picture as the stream's headers describe it (nothing decoded)."""

    pix_fmt: str | None = None  # FFmpeg's pixel format: "yuv420p", "yuv420p10le" (None: not known)
    bit_depth: int = 8  # bits per sample of the coded picture (10 for yuv420p10le; 8 when not known)
    transfer: str = "unknown"  # the tagged transfer characteristic, FFmpeg's name: "bt709", "smpte2084" (PQ)

    @property
    def hdr(self) -> str | None:
        """``"PQ"`` or ``"HLG"`` for a high-dynamic-range transfer, else None."""
        return _HDR_TRANSFERS.get(self.transfer)

    @classmethod
    def of(cls, codec_context) -> "PictureFormat":
        """From a stream's codec parameters (what the demuxer read from the headers)."""
        import av

        pix_fmt = getattr(codec_context, "pix_fmt", None) or None
        depth = 8
        if pix_fmt:
            with contextlib.suppress(ValueError, TypeError, av.FFmpegError):
                depth = max((c.bits for c in av.VideoFormat(pix_fmt).components), default=8)
        transfer = _TRANSFERS.get(int(getattr(codec_context, "color_trc", 0) or 0), "unknown")
        return cls(pix_fmt=pix_fmt, bit_depth=int(depth), transfer=transfer)


@dataclass
class StreamFacts:
    """What the header (and, where it does not tell, the packets) say about the first video stream."""

    size: tuple[int, int]  # (H, W) of displayed frames, after rotation
    rotation: int  # counter-clockwise degrees applied to the coded frames (0, 90, 180, 270)
    rate: Fraction  # frames per second, exact (24000/1001 stays so); the mean rate when variable
    time_base: Fraction  # of the pts in ``times``
    frames: int  # displayed frames whose data is in the file
    variable_rate: bool
    times: Sequence[int] | None  # index -> pts (None: the packets carry no pts)
    times_exact: bool  # ``times`` read from the packets (not computed from the rate, nor left for later)
    duration: float | None = None  # seconds, the container's (None: unknown)
    streams: int = 1  # in the container, of every kind
    sample_aspect: Fraction = Fraction(1)  # a displayed pixel's width over its height (after rotation)
    picture: PictureFormat = PictureFormat()  # pixel format, bit depth, transfer (HDR or not)


def probe_stream(path: Path) -> StreamFacts:
    """The stream's facts without decoding a frame (an MP4's index, else one pass over the packets)."""
    container, stream = open_video(path)
    with contextlib.closing(container):
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(30)
        facts = StreamFacts(size=(stream.codec_context.height, stream.codec_context.width), rotation=0,
                            rate=Fraction(rate), time_base=Fraction(stream.time_base or Fraction(1, 90000)),
                            frames=0, variable_rate=False, times=None, times_exact=False,
                            duration=container.duration / 1e6 if container.duration else None,
                            streams=len(container.streams), picture=PictureFormat.of(stream.codec_context))
        if container.format.name.split(",")[0] == _MOV_FORMAT and _from_index(path, stream, facts):
            facts.rotation = _mp4_rotation(path)
        else:
            times, facts.frames = _demux_times(container, stream)
            _set_times(facts, times)
        facts.sample_aspect = _sample_aspect(stream)
    if facts.rotation in (90, 270):
        facts.size, facts.sample_aspect = facts.size[::-1], 1 / facts.sample_aspect
    return facts


def _sample_aspect(stream) -> Fraction:
    """The stream's sample aspect ratio (the container's, else the codec's); 1 when unset."""
    for found in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if found is not None and found.numerator > 0 and found.denominator > 0:
            return Fraction(found.numerator, found.denominator)
    return Fraction(1)


def _from_index(path: Path, stream, facts: StreamFacts) -> bool:
    """Count and pts table from an MP4's sample index (no packet read); False when it is not complete."""
    entries = getattr(stream, "index_entries", None)  # PyAV 18 has it (16.1 had not)
    if entries is None or stream.frames <= 0 or len(entries) != stream.frames or stream.start_time is None:
        return False  # fragmented, an index the demuxer built otherwise, or an older PyAV: read the packets
    file_size = Path(path).stat().st_size
    shown = [e for e in entries if not e.is_discard]
    whole = [e for e in shown if e.pos + e.size <= file_size]  # a truncated file: the frames with data
    if shown and not whole:
        raise ffmpeg_error(path, ValueError("invalid data: no frame's data is in the file"))
    facts.frames = len(whole)
    deltas = {b.timestamp - a.timestamp for a, b in zip(shown, shown[1:])}  # dts steps: the frame durations
    facts.variable_rate = len(deltas) > 1 and max(deltas) - min(deltas) > 1  # 1 tick: a rounded time base
    if len(deltas) == 1 and len(whole) == len(shown):
        step = deltas.pop()
        facts.times = range(stream.start_time, stream.start_time + step * len(whole), step)
    return True


def _mp4_rotation(path: Path) -> int:
    import struct

    from rollingdepth.io.mp4_boxes import mp4_rotation

    try:
        return mp4_rotation(path)
    except (OSError, ValueError, TypeError, struct.error):
        return 0


def _demux_times(container, stream) -> tuple[list[int] | None, int]:
    """``(sorted pts of the displayed packets, or None when some have none; their count)``: no
    decoding, and a damaged tail ends the list."""
    import av

    times, count = [], 0
    with contextlib.suppress(av.FFmpegError, OSError):
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard or packet.is_corrupt:
                continue
            count += 1
            if times is not None and packet.pts is not None:
                times.append(packet.pts)
            else:
                times = None
    if times is not None:
        times.sort()
    return times, count


def _set_times(facts: StreamFacts, times: list[int] | None) -> None:
    facts.times, facts.times_exact = times, True  # read from the packets (None: they carry no pts)
    if times and len(times) > 2:
        deltas = np.diff(np.asarray(times, dtype=np.int64))  # [N - 1] pts steps
        facts.variable_rate = bool(deltas.max() - deltas.min() > 1)  # 1 tick: a rounded time base (MKV's ms)


def packet_times(path: Path) -> list[int] | None:
    """Sorted pts of the first video stream's displayed packets, read without decoding (None: no pts)."""
    container, stream = open_video(path)
    with contextlib.closing(container):
        return _demux_times(container, stream)[0]


# ----------------------------------------------------------------------------- decoding
_BT709, _UNSPECIFIED, _BT601 = 1, 2, 5  # AVColorSpace (swscale's coefficient tables take the same numbers)
_LIMITED, _FULL = 1, 2  # AVColorRange: tv (16-235), pc (0-255)


def is_hd(width: int, height: int) -> bool:
    """A size that players show as BT.709 when untagged (mpv's rule; SD, BT.601, below it)."""
    return width >= 1280 or height > 576


def source_colour(frame) -> tuple[int, int]:
    """``(matrix, range)`` that turn a decoded frame into RGB: its own tags; untagged, what
    players assume (BT.709 for HD sizes, BT.601 below, :func:`is_hd`; limited range, but full for
    the JPEG formats ``yuvj*``)."""
    matrix = int(getattr(frame, "colorspace", _UNSPECIFIED) or _UNSPECIFIED)
    if matrix in (0, _UNSPECIFIED) or matrix > 10 or matrix == 8:  # RGB or YCgCo matrices only come as rgb/gbr formats
        matrix = _BT709 if is_hd(frame.width, frame.height) else _BT601
    colour_range = int(getattr(frame, "color_range", 0) or 0)
    if colour_range not in (_LIMITED, _FULL):
        colour_range = _FULL if frame.format.name.startswith("yuvj") else _LIMITED
    return matrix, colour_range


_SWS_BILINEAR, _SWS_FULL_CHR_H_INT, _SWS_ACCURATE_RND = 0x2, 0x2000, 0x40000  # swscale's flags
_DEEP_FLAGS = _SWS_BILINEAR | _SWS_FULL_CHR_H_INT | _SWS_ACCURATE_RND


@functools.lru_cache(maxsize=64)
def _deep(pix_fmt: str) -> bool:
    """More than 8 bits per sample (``yuv420p10le``, ``p010le``)."""
    import av

    return max((c.bits for c in av.VideoFormat(pix_fmt).components), default=8) > 8


def _rgb(frame) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` of a decoded frame with its own matrix and range
    (:func:`source_colour`), its display rotation applied. A frame of more than 8 bits per sample
    is converted with full chroma interpolation and accurate rounding: swscale's default path
    from 10 bits to rgb24 comes out about 2 levels dark (measured in ``tests/test_picture.py``)."""
    if frame.format.name.startswith(("yuv", "nv", "p0", "p2", "y2", "uyvy", "yuyv")):
        matrix, colour_range = source_colour(frame)
        flags = _DEEP_FLAGS if _deep(frame.format.name) else None
        image = frame.to_ndarray(format="rgb24", src_colorspace=matrix, src_color_range=colour_range,
                                 dst_color_range=_FULL, interpolation=flags)
    else:  # RGB, grey, palette: no matrix
        image = frame.to_ndarray(format="rgb24")
    turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4  # the display matrix (PyAV 14 and later)
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def _decoded(container, stream, path: Path) -> Iterator:
    """Every decoded frame from the demuxer's position. A damaged tail ends it: a packet cut short
    is not decoded, the decoder gives the frames it holds, and an error before any frame is an
    ``InputError``."""
    import av

    produced = False
    try:
        for frame in _decode_packets(stream, container.demux(stream)):
            produced = True
            yield frame
    except (av.FFmpegError, OSError, ValueError) as exc:
        if not produced:
            raise ffmpeg_error(path, exc) from None
        yield from _flushed(stream)


def _decode_packets(stream, packets: Iterator) -> Iterator:
    """The frames of ``packets`` but those flagged corrupt (a truncated file's last one, cut short:
    not counted by the probe either), then those the decoder holds."""
    for packet in packets:
        if packet.is_corrupt and packet.size:
            continue
        yield from stream.decode(packet)
    yield from _flushed(stream)


def _flushed(stream) -> Iterator:
    """The frames the decoder still holds (B-frames wait for the frame after them)."""
    import av

    with contextlib.suppress(av.FFmpegError, OSError, ValueError):
        yield from stream.decode(None)


def _converted(frames: Iterator, workers: int = 2, ahead: int = 4) -> Iterator[np.ndarray]:
    """:func:`_rgb` of each frame, in order, converted in ``workers`` threads up to ``ahead``
    frames ahead (FFmpeg's scaler runs without the GIL: conversion overlaps decoding and the
    caller's work; one thread converts 1080p at about 160 frames/s, docs/performance.md)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rgb")
    pending = collections.deque()
    try:
        for frame in frames:
            pending.append(pool.submit(_rgb, frame))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # also when the reader is left early (Ctrl-C): no conversion waited for
        pool.shutdown(wait=False, cancel_futures=True)


def _sequential(path: Path, skip: int, count: int) -> Iterator:
    """Decoded frames ``skip ..`` (at most ``count``, 0 = all), counted from the first one."""
    container, stream = open_video(path)
    with contextlib.closing(container):
        produced = 0
        for index, frame in enumerate(_decoded(container, stream, path)):
            if index < skip:
                continue
            yield frame
            produced += 1
            if count > 0 and produced >= count:
                return


def _seek_from(container, stream, seek_pts: int) -> tuple[tuple[int, int] | None, Iterator]:
    """Seek to a keyframe at or before ``seek_pts``: ``((its pts, its dts), the decoded frames
    from it)``; packets before the first keyframe with a pts are skipped (None: none came)."""
    import av

    try:
        container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
    except (av.FFmpegError, OSError):
        return None, iter(())
    packets = container.demux(stream)
    for first in packets:
        if first.is_keyframe and first.pts is not None and first.size:
            frames = _decode_packets(stream, itertools.chain((first,), packets))
            return (first.pts, first.pts if first.dts is None else first.dts), frames
    return None, iter(())


def _landing(container, stream, table: Sequence[int], start: int) -> Iterator | None:
    """Decoded frames from a keyframe shown at or before frame ``start``, from further back
    while the seek lands on a keyframe shown after it (MP4 seeks by decoding time, before the
    presentation time with B-frames; MPEG-TS lands near the time, not on a keyframe); None:
    seeking did not work."""
    target = seek_pts = table[start]
    back = max(1, table[1] - table[0]) if len(table) > 1 else 1  # about a frame, in pts ticks
    for _ in range(16):
        key, frames = _seek_from(container, stream, seek_pts)
        if key is not None and key[0] <= target:
            return frames  # leading frames of an open GOP (shown before the keyframe) are dropped by pts
        if seek_pts < table[0] - back:
            return None  # before the first frame, and still no keyframe before the wanted one
        last = seek_pts if key is None else min(seek_pts, key[1])  # no keyframe after the landing / one too late
        seek_pts, back = last - back, back * 4  # before the keyframe's decoding time
    return None


def _by_pts(path: Path, start: int, count: int, table: Sequence[int]) -> Iterator:
    """Decoded frames ``start ..`` (at most ``count``, 0 = all) found by their pts in ``table``;
    ``_UnexpectedFrame`` (after the frames that matched) when one's pts differs."""
    import av

    stop = len(table) if count <= 0 else min(len(table), start + count)
    if start >= stop:
        return
    container, stream = open_video(path)
    with contextlib.closing(container):
        frames = _landing(container, stream, table, start)
        if frames is None:
            raise _UnexpectedFrame(f"no keyframe at or before frame {start}")
        index = start
        try:
            for frame in frames:
                if frame.pts is not None and frame.pts < table[index]:
                    continue  # between the keyframe and the wanted frame
                if frame.pts != table[index]:
                    raise _UnexpectedFrame(f"frame {index} came with pts {frame.pts}, not {table[index]}")
                yield frame
                index += 1
                if index >= stop:
                    return
        except (av.FFmpegError, OSError, ValueError) as exc:
            if index == start:
                raise _UnexpectedFrame(f"decoding up to frame {start} failed ({exc})") from None
            return  # a damaged tail: keep what decoded
        if index < stop and index < len(table):
            raise _UnexpectedFrame(f"the stream ended at frame {index}, before frame {stop - 1}")


def read_frames(path: Path, start: int, count: int, table_of: Callable[[bool], Sequence[int] | None],
                on_fallback: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """uint8 RGB ``[H, W, 3]`` frames ``start ..`` of ``path``, at most ``count`` (0 = all).

    ``table_of(exact)``: the index -> pts table (``exact``: read from the packets, not computed;
    None: decode from the start, counting). A computed table that a frame contradicts is replaced
    by the exact one; a frame that contradicts the exact one makes the rest come from decoding
    from the start, counting frames, after ``on_fallback(reason)`` (default: an
    :class:`InexactSeekWarning`)."""
    done = 0
    reason = None
    if start > 0:
        for exact in (False, True):
            table = table_of(exact)
            if table is None:
                break
            try:
                for frame in _converted(_by_pts(path, start + done, count - done if count > 0 else 0, table)):
                    done += 1
                    yield frame
                return
            except _UnexpectedFrame as exc:
                reason = str(exc)
                if table is table_of(True):
                    break
        if reason is not None:
            (on_fallback or _warn)(f"{path}: {reason}; reading it from the first frame instead (slower)")
    if count > 0 and done >= count:
        return
    yield from _converted(_sequential(path, start + done, count - done if count > 0 else 0))


def _warn(message: str) -> None:
    warnings.warn(message, InexactSeekWarning, stacklevel=4)


# ----------------------------------------------------------------------------- writing
def retime_video(path: Path, times: Sequence[int], time_base: Fraction, frames: int) -> None:
    """Give the first ``frames`` frames of the constant-rate video ``path`` (written at any rate)
    the times ``times`` (pts in ``time_base`` from 0; one more than ``frames``: where the last one
    ends), in place: its packets are copied (no re-encoding) with their pts and dts mapped from
    the constant grid onto ``times``, so B-frames keep their order (a packet decoded before the
    first frame is shown gets a dts before 0). ``ValueError`` when the file is not such a video."""
    import av

    path = Path(path)
    retimed = path.with_name(f".{path.stem}.retimed{path.suffix}")
    try:
        with av.open(str(path)) as source:
            stream = source.streams.video[0]
            packets = [p for p in source.demux(stream) if p.size]
            shown = sorted(p.pts for p in packets if p.pts is not None)
            if len(shown) != frames or len(shown) != len(packets) or len(times) <= frames:
                raise ValueError(f"{path}: {len(packets)} packets for {frames} frames, {len(times)} times")
            steps = {b - a for a, b in zip(shown, shown[1:])}
            step, first = (steps.pop() if len(steps) == 1 else None), shown[0]
            if step is None and frames > 1:
                raise ValueError(f"{path}: not written at a constant rate")
            shortest = min((b - a for a, b in zip(times, times[1:])), default=1)
            with av.open(str(retimed), "w", options={"movflags": "+faststart"}) as target:  # an MP4, as the writer's
                out = target.add_stream_from_template(stream)
                out.time_base = time_base
                for packet in packets:
                    shown_at = (packet.pts - first) // step if step else 0
                    decoded_at = (packet.dts - first) // step if step and packet.dts is not None else shown_at
                    packet.pts = times[shown_at]
                    packet.dts = times[decoded_at] if decoded_at >= 0 else times[0] + decoded_at * max(1, shortest // 8)
                    packet.duration = times[shown_at + 1] - times[shown_at]
                    packet.time_base = time_base
                    packet.stream = out
                    target.mux(packet)
        os.replace(retimed, path)
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: {exc}") from None
    finally:
        retimed.unlink(missing_ok=True)
