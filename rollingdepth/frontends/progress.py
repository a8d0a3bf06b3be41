"""Progress of a run as plain events, and the renderers that show them.

The library reports progress through one callback, ``callback(stage, done, total)``, whose
``stage`` is a typed :class:`~rollingdepth.runtime.stages.Stage` (its name, dilation, shot
and segment) or a stage's plain name (:mod:`rollingdepth.runtime.passes`,
:meth:`rollingdepth.runtime.outputs.PendingOutputs.write`). A
:class:`Reporter` turns those calls, and what a front end knows about its videos (started,
done, failed, skipped) into :class:`Event` objects: plain, immutable data with timings
(elapsed, rate, ETA) added, which any front end can render or send elsewhere
(``event.to_dict()`` is what ``--progress json`` prints).

Renderers (each a callable taking one event):

* :class:`BarRenderer`: rich live bars, for a terminal;
* :class:`LineRenderer`: plain text lines, for log files and CI: a line when a stage
  starts, at most one every ``log_every`` seconds while it runs, one when it ends, one per
  finished video;
* :class:`JsonRenderer`: the same events as JSON lines (schema: ``docs/progress.md``).

:func:`only_errors` wraps a renderer for ``--quiet``. Every clock is injectable, so that
tests need no sleeps.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TextIO

from rollingdepth.runtime.stages import Stage, as_stage

__all__ = ["BarRenderer", "Event", "JsonRenderer", "LineRenderer", "Message", "Reporter", "StageEvent", "Summary", "start_share",
           "VideoDone", "VideoFailed", "VideoSkipped", "VideoStart", "make_renderer", "only_errors",
           "PROGRESS_MODES"]

PROGRESS_MODES = ("auto", "bar", "lines", "json")

# What a stage counts, where the library's numbers have one unit throughout.
STAGE_UNITS = {"shots": "frames", "encode": "frames", "snippets": "snippets", "merge": "frames", "refine": "steps",
               "refine decode": "frames"}


# ----------------------------------------------------------------------------- events
@dataclass(frozen=True, kw_only=True)
class Event:
    """Common to every event: when (seconds since the epoch) and, under a launcher, the rank."""

    kind: ClassVar[str] = "event"
    time: float
    rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"event": kind, ...fields}``; fields that are None are left out, ``time`` comes last."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        when = fields.pop("time")
        out = {"event": self.kind, **{k: v for k, v in fields.items() if v is not None}}
        out["time"] = round(when, 3)
        return out


@dataclass(frozen=True, kw_only=True)
class StageEvent(Event):
    """A stage of one video's work. ``phase``: ``start`` (its first report), ``progress`` or
    ``end`` (the stage is over; ``done``/``total`` are its last report)."""

    kind: ClassVar[str] = "stage"
    video: str
    stage: str
    phase: str
    done: int
    total: int
    elapsed_s: float
    rate: float | None = None  # per second, in ``unit``
    eta_s: float | None = None
    dilation: int | None = None
    unit: str | None = None
    shot: int | None = None  # 1-based, of ``shots``, when the video runs as several units
    shots: int | None = None
    segment: int | None = None  # 1-based, of ``segments``, when the shot runs in segments
    segments: int | None = None

    @property
    def label(self) -> str:
        """The stage as text (``snippets d=10``, ``shot 3/41 segment 2/5 merge``)."""
        return str(Stage(self.stage, self.dilation, self.shot, self.shots, self.segment, self.segments))


@dataclass(frozen=True, kw_only=True)
class VideoStart(Event):
    kind: ClassVar[str] = "video_start"
    video: str
    index: int  # 1-based, among this process's videos
    videos: int


@dataclass(frozen=True, kw_only=True)
class VideoDone(Event):
    kind: ClassVar[str] = "video_done"
    video: str
    frames: int
    seconds: float
    s_per_frame: float | None
    outputs: list[str] | None = None
    finished: int  # videos finished (done, failed or skipped) so far, this one included
    videos: int


@dataclass(frozen=True, kw_only=True)
class VideoFailed(Event):
    kind: ClassVar[str] = "video_failed"
    video: str
    error: str  # one line
    seconds: float | None = None
    traceback: str | None = None  # with --verbose
    finished: int
    videos: int


@dataclass(frozen=True, kw_only=True)
class VideoSkipped(Event):
    kind: ClassVar[str] = "video_skipped"
    video: str
    reason: str
    finished: int
    videos: int


@dataclass(frozen=True, kw_only=True)
class Message(Event):
    """Anything else worth telling: ``level`` is ``info``, ``warning`` or ``error``."""

    kind: ClassVar[str] = "message"
    level: str
    text: str
    video: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, kw_only=True)
class Summary(Event):
    """The end of a run: counts over every rank, and one entry per video."""

    kind: ClassVar[str] = "summary"
    videos: int
    done: int
    failed: int
    skipped: int
    seconds: float
    interrupted: bool = False
    results: list[dict] = dataclasses.field(default_factory=list)
    metrics: dict | None = None  # eval-depth: the mean of each metric


def is_error(event: Event) -> bool:
    return isinstance(event, VideoFailed) or (isinstance(event, Message) and event.level == "error")


# ----------------------------------------------------------------------------- the reporter
@dataclass
class _Stream:
    """The stage one video is in."""

    mark: float  # when the next stage is taken to start (the last report, or an explicit mark)
    started: float = 0.0  # when the video started
    stage: Stage | None = None  # the open stage
    stage_started: float = 0.0
    done: int = 0
    total: int = 0
    last: float = 0.0  # time of the last report of the open stage
    last_wall: float = 0.0  # the same, since the epoch
    base_done: int = 0  # rate = (done - base_done) / (last - base_time)
    base_time: float = 0.0


class Reporter:
    """Makes :class:`Event` objects from the library's progress callback and from what the front
    end tells it about its videos, and hands each to ``sink``. Thread-safe: a video's outputs
    may be written (and reported) in another thread while the next video runs.

    ``reporter.callback(video)`` is the ``progress(stage, done, total)`` callback for one
    video, as :func:`rollingdepth.runtime.video_job.process_video` and :func:`rollingdepth.runtime.passes.run`
    take it. A stage ends when the same video reports another stage or :meth:`end_stage` is
    called (after the prediction, and after the writing).
    """

    def __init__(self, sink: Callable[[Event], None], videos: int = 0, rank: int | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.sink, self.videos, self.rank = sink, videos, rank
        self.clock, self.wall = clock, wall
        self.finished = 0
        self._started = 0
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.RLock()

    # -- the library's callback
    def callback(self, video: str) -> Callable[[Stage | str, int, int], None]:
        return lambda stage, done, total: self.update(video, stage, done, total)

    def update(self, video: str, stage: Stage | str, done: int, total: int) -> None:
        """A report of ``video``'s ``stage`` (a :class:`Stage`, or the name of one without fields)."""
        stage = as_stage(stage)
        with self._lock:
            now = self.clock()
            s = self._stream(video, now)
            if s.stage is not None and s.stage != stage:
                self._end(video, s, s.last, s.last_wall)  # it ended when it last reported
            if s.stage != stage:
                s.stage, s.stage_started, phase = stage, s.mark, "start"
                s.base_done, s.base_time = 0, s.mark
            else:
                phase = "progress"
                if done < s.done:  # counting restarted in other units: the rate starts again
                    s.base_done, s.base_time = done, now
            s.done, s.total, s.last, s.mark, s.last_wall = done, total, now, now, self.wall()
            self._emit(self._stage_event(video, s, phase, now, s.last_wall))

    def end_stage(self, video: str) -> None:
        """The open stage of ``video`` is over (its work returned); the next one starts now."""
        with self._lock:
            now = self.clock()
            s = self._stream(video, now)
            if s.stage is not None:
                self._end(video, s, now, self.wall())
            s.mark = now

    def mark(self, video: str) -> None:
        """The next stage of ``video`` starts now (e.g. its writing, which may have waited)."""
        with self._lock:
            self._stream(video, self.clock()).mark = self.clock()

    # -- what the front end knows
    def video_start(self, video: str) -> None:
        with self._lock:
            now = self.clock()
            self._streams[video] = _Stream(mark=now, started=now)
            self._started += 1
            self._emit(VideoStart(time=self.wall(), rank=self.rank, video=video, index=self._started,
                                  videos=max(self.videos, self._started)))

    def video_done(self, video: str, frames: int, seconds: float | None = None, outputs: list[str] | None = None) -> None:
        with self._lock:
            if seconds is None:
                seconds = self._seconds(video) or 0.0
            self._close(video)
            self._emit(VideoDone(time=self.wall(), rank=self.rank, video=video, frames=frames, seconds=round(seconds, 3),
                                 s_per_frame=round(seconds / frames, 4) if frames else None, outputs=outputs,
                                 finished=self.finished, videos=max(self.videos, self.finished)))

    def video_failed(self, video: str, error: str, traceback: str | None = None) -> None:
        """The video failed; its open stage (if any) ends without an ``end`` event."""
        with self._lock:
            seconds = self._seconds(video)
            self._close(video)
            self._emit(VideoFailed(time=self.wall(), rank=self.rank, video=video, error=error,
                                   seconds=None if seconds is None else round(seconds, 3), traceback=traceback,
                                   finished=self.finished, videos=max(self.videos, self.finished)))

    def video_skipped(self, video: str, reason: str) -> None:
        with self._lock:
            self._close(video)
            self._emit(VideoSkipped(time=self.wall(), rank=self.rank, video=video, reason=reason,
                                    finished=self.finished, videos=max(self.videos, self.finished)))

    def message(self, level: str, text: str, video: str | None = None, traceback: str | None = None) -> None:
        with self._lock:
            self._emit(Message(time=self.wall(), rank=self.rank, level=level, text=text, video=video,
                               traceback=traceback))

    def info(self, text: str, video: str | None = None) -> None:
        self.message("info", text, video)

    def warning(self, text: str, video: str | None = None) -> None:
        self.message("warning", text, video)

    def error(self, text: str, video: str | None = None, traceback: str | None = None) -> None:
        self.message("error", text, video, traceback)

    def summary(self, results: list, seconds: float, interrupted: bool = False, metrics: dict | None = None) -> None:
        """``results``: :class:`rollingdepth.runtime.outputs.VideoResult`-like objects (name, ok, skipped,
        frames, seconds, error, outputs)."""
        entries = []
        for r in results:
            status = "skipped" if r.skipped else "done" if r.ok else "failed"
            entry = {"video": r.name, "status": status}
            if status == "done" and r.frames:  # (eval-depth scoring files made earlier knows no frames)
                entry.update(frames=r.frames, seconds=round(r.seconds, 3), outputs=list(r.outputs))
            elif status == "failed":
                entry["error"] = r.error
            entries.append(entry)
        count = {k: sum(e["status"] == k for e in entries) for k in ("done", "failed", "skipped")}
        with self._lock:
            self._emit(Summary(time=self.wall(), rank=self.rank, videos=len(entries), seconds=round(seconds, 3),
                               interrupted=interrupted, results=entries, metrics=metrics, **count))

    # -- internals
    def _stream(self, video: str, now: float) -> _Stream:
        if video not in self._streams:
            self._streams[video] = _Stream(mark=now, started=now)
        return self._streams[video]

    def _seconds(self, video: str) -> float | None:
        s = self._streams.get(video)
        return None if s is None else self.clock() - s.started

    def _close(self, video: str) -> None:
        self._streams.pop(video, None)
        self.finished += 1

    def _end(self, video: str, s: _Stream, end: float, end_wall: float) -> None:
        self._emit(self._stage_event(video, s, "end", end, end_wall))
        s.stage = None

    def _stage_event(self, video: str, s: _Stream, phase: str, now: float, wall: float) -> StageEvent:
        stage = s.stage
        elapsed = max(now - s.stage_started, 0.0)
        span, counted = now - s.base_time, s.done - s.base_done
        rate = counted / span if span > 0 and counted > 0 else None
        eta = None
        if rate and phase != "end" and s.total >= s.done:
            eta = round((s.total - s.done) / rate, 1)
        return StageEvent(time=wall, rank=self.rank, video=video, stage=stage.name, phase=phase, done=s.done,
                          total=s.total, elapsed_s=round(elapsed, 3), rate=None if rate is None else round(rate, 3),
                          eta_s=eta, dilation=stage.dilation, unit=STAGE_UNITS.get(stage.name), shot=stage.shot,
                          shots=stage.shots, segment=stage.segment, segments=stage.segments)

    def _emit(self, event: Event) -> None:
        self.sink(event)

    # a live display (the bars) runs while the reporter is entered
    def __enter__(self):
        enter = getattr(self.sink, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc):
        leave = getattr(self.sink, "__exit__", None)
        if leave is not None:
            leave(*exc)


# ----------------------------------------------------------------------------- text
def duration(seconds: float | None) -> str:
    """``42.1s``, ``12m05s``, ``3h02m``."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _name(video: str) -> str:
    return Path(video).name or video


def _rank(event: Event) -> str:
    return "" if event.rank is None else f"[rank {event.rank}] "


def _error_text(event: Event) -> str:
    """``Error: ...`` as the commands have always printed it; a video's name is added when the
    error does not say it."""
    if isinstance(event, VideoFailed):
        text = event.error
        if event.video not in text and _name(event.video) not in text:
            text = f"{_name(event.video)}: {text}"
    else:
        text = event.text
    return f"Error: {_rank(event)}{text}"


def _rate(event: StageEvent) -> str:
    if event.rate is None or event.unit is None:  # a rate of what, the text could not say
        return ""
    value = f"{event.rate:.2f}" if event.rate < 10 else f"{event.rate:.1f}"
    return f"{value} {event.unit}/s"


def stage_line(event: StageEvent) -> str:
    """One line of text for a stage event (without the time)."""
    unit = f" {event.unit}" if event.unit else ""
    count = f"{event.done}/{event.total}{unit}"
    rate = _rate(event)
    head = f"{_rank(event)}{_name(event.video)}: {event.label}"
    if event.phase == "start":
        return f"{head} started, {count}"
    if event.phase == "end":
        return f"{head} done, {count} in {duration(event.elapsed_s)}" + (f", {rate}" if rate else "")
    pct = f" ({100 * event.done / event.total:.0f}%)" if event.total > 0 and event.done <= event.total else ""
    parts = [f"{head} {count}{pct}"]
    if rate:
        parts.append(rate)
    parts.append(f"elapsed {duration(event.elapsed_s)}")
    if event.eta_s is not None:
        parts.append(f"ETA {duration(event.eta_s)}")
    return ", ".join(parts)


def event_line(event: Event) -> str | None:
    """Plain text for an event, without the time; None for events a text log does not show."""
    if is_error(event):
        return _error_text(event)
    if isinstance(event, StageEvent):
        return stage_line(event)
    if isinstance(event, Message):
        prefix = "Warning: " if event.level == "warning" else ""
        return f"{prefix}{_rank(event)}{event.text}"
    count = f"{event.finished}/{event.videos} finished" if hasattr(event, "finished") else ""
    if isinstance(event, VideoStart):
        return f"{_rank(event)}{_name(event.video)}: started, video {event.index}/{event.videos}"
    if isinstance(event, VideoDone):
        spf = f", {event.s_per_frame:.3f} s/frame" if event.s_per_frame is not None else ""
        return (f"{_rank(event)}{_name(event.video)}: {event.frames} frames predicted in {event.seconds:.1f} s"
                f"{spf} ({count})")
    if isinstance(event, VideoSkipped):
        return f"{_rank(event)}{_name(event.video)}: {event.reason}, skipped ({count})"
    if isinstance(event, Summary):
        parts = [f"{event.done} done", f"{event.failed} failed"] + ([f"{event.skipped} skipped"] if event.skipped else [])
        state = "interrupted" if event.interrupted else "finished"
        videos = f"{event.videos} video" + ("" if event.videos == 1 else "s")
        return f"{_rank(event)}run {state}: {videos}, {', '.join(parts)} in {duration(event.seconds)}"
    return None


class _Throttle:
    """Which stage events a log shows: every start and end, and a stage's progress at most once
    every ``log_every`` seconds."""

    def __init__(self, log_every: float, clock: Callable[[], float]):
        self.log_every, self.clock = log_every, clock
        self._last: dict[tuple, float] = {}

    def __call__(self, event: Event) -> bool:
        if not isinstance(event, StageEvent):
            return True
        key = (event.rank, event.video, event.label)
        now = self.clock()
        if event.phase == "end":
            self._last.pop(key, None)
            return True
        if event.phase == "progress" and now - self._last.get(key, -float("inf")) < self.log_every:
            return False
        self._last[key] = now
        return True


def _stderr() -> TextIO:
    return sys.stderr  # looked up at each write: tests and callers may replace it


class LineRenderer:
    """Plain lines for log files: progress lines begin with the local time; messages and errors
    read as they always have (``Error: ...``, ``Warning: ...``)."""

    def __init__(self, stream: TextIO | None = None, log_every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, localtime: Callable[[float], Any] = time.localtime):
        self.stream, self.localtime = stream, localtime
        self.throttle = _Throttle(log_every, clock)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if not self.throttle(event):
            return
        line = event_line(event)
        if line is None:
            return
        if isinstance(event, (StageEvent, VideoStart, VideoDone, VideoSkipped, Summary)):
            line = f"{time.strftime('%H:%M:%S', self.localtime(event.time))} {line}"
        trace = getattr(event, "traceback", None)
        with self._lock:
            stream = self.stream or _stderr()
            if trace:
                stream.write(trace if trace.endswith("\n") else trace + "\n")
            stream.write(line + "\n")
            stream.flush()


class JsonRenderer:
    """One JSON object per line (``event.to_dict()``), with the same throttling as the lines."""

    def __init__(self, stream: TextIO | None = None, log_every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.throttle = _Throttle(log_every, clock)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if not self.throttle(event):
            return
        line = json.dumps(event.to_dict(), ensure_ascii=False, default=str)
        with self._lock:
            stream = self.stream or _stderr()
            stream.write(line + "\n")
            stream.flush()


def only_errors(renderer: Callable[[Event], None]) -> Callable[[Event], None]:
    """``--quiet``: pass on errors only."""

    def render(event: Event) -> None:
        if is_error(event):
            renderer(event)

    render.inner = renderer  # type: ignore[attr-defined]
    return render


# ----------------------------------------------------------------------------- live bars
class BarRenderer:
    """rich live bars for a terminal: one over the videos, one for the current stage and one for
    the outputs being written (they are written while the next video runs). Messages and errors
    are printed above the bars.

    ``count_done`` (distributed runs): how many videos every rank has finished, polled at most
    every 2 s, for the videos bar.
    """

    def __init__(self, console, videos: int, count_done: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.console, self.clock = console, clock
        self._count_done = count_done
        self._last_poll = -float("inf")
        self.progress = Progress(
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            _rate_column(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.videos = self.progress.add_task("videos", total=videos)
        self.stage = self.progress.add_task("", total=1, visible=False)
        self.writing = self.progress.add_task("", total=1, visible=False)
        self._showing: dict = {}  # task -> the video it shows
        self._lock = threading.RLock()

    def set_videos(self, videos: int, count_done: Callable[[], int] | None = None) -> None:
        """The number of videos of the whole run, and (distributed) how to count the finished ones."""
        self._count_done = count_done
        self.progress.update(self.videos, total=videos)

    def __enter__(self):
        self.progress.reset(self.videos)  # its clock starts with the run, not when the bars were made
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._render(event)

    def _render(self, event: Event) -> None:
        p = self.progress
        if isinstance(event, StageEvent):
            self._poll()
            task = self.writing if event.stage == "write" else self.stage
            if event.phase == "end":
                p.update(task, visible=False)
                self._showing.pop(task, None)
                return
            self._showing[task] = event.video
            if event.phase == "start":
                description = f"writing {_name(event.video)[:14]}" if task == self.writing else event.label
                if event.stage == "load":
                    description = "loading checkpoint"
                p.reset(task, total=max(event.total, 1), completed=0, description=description, visible=True)
            p.update(task, completed=event.done, total=max(event.total, 1))
        elif isinstance(event, VideoStart):
            p.update(self.videos, description=f"videos ({_name(event.video)[:12]})")
        elif isinstance(event, (VideoDone, VideoFailed, VideoSkipped)):
            for task in [t for t, video in self._showing.items() if video == event.video]:
                p.update(task, visible=False)
                del self._showing[task]
            if isinstance(event, VideoFailed):
                self._print_error(event)
            if self._count_done is None:
                p.advance(self.videos)
            else:
                self._poll(force=True)
        elif isinstance(event, Message):
            if event.level == "error":
                self._print_error(event)
            elif event.level == "warning":
                p.console.print(f"[yellow]Warning:[/] {_escape(_rank(event) + event.text)}", soft_wrap=True,
                                highlight=False)
            else:
                p.console.print(_rank(event) + event.text, soft_wrap=True, highlight=False, markup=False)

    def _print_error(self, event: Event) -> None:
        trace = getattr(event, "traceback", None)
        if trace:
            self.progress.console.print(trace, highlight=False, markup=False)
        text = _error_text(event).removeprefix("Error: ")
        self.progress.console.print(f"[red]Error:[/] {_escape(text)}", soft_wrap=True, highlight=False)

    def _poll(self, force: bool = False) -> None:
        if self._count_done is None or (not force and self.clock() - self._last_poll < 2.0):
            return
        self._last_poll = self.clock()
        self.progress.update(self.videos, completed=self._count_done())


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _rate_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second of the task (frames, snippets, videos)."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:6.1f}/s" if speed else "       ", style="progress.data.speed")

    return RateColumn()


# ----------------------------------------------------------------------------- choice
def make_renderer(mode: str, quiet: bool, console, videos: int = 0, log_every: float = 30.0,
                  count_done: Callable[[], int] | None = None, is_terminal: bool | None = None):
    """The renderer for ``--progress mode`` (auto: live bars on a terminal, else plain lines),
    wrapped by :func:`only_errors` with ``--quiet``. ``console``: the rich console on stderr."""
    from rollingdepth.frontends.options import COMMAND_OPTIONS

    if mode not in PROGRESS_MODES:
        raise ValueError(f"{COMMAND_OPTIONS['progress'].name}: unknown mode {mode!r}; "
                         f"expected one of {', '.join(PROGRESS_MODES)}")
    if log_every < 0:
        raise ValueError(f"{COMMAND_OPTIONS['log_every'].name}: must be >= 0 seconds, got {log_every:g}")
    if mode == "auto":
        mode = "bar" if (stderr_is_terminal() if is_terminal is None else is_terminal) else "lines"
    if mode == "json":
        renderer = JsonRenderer(log_every=log_every)
    elif mode == "lines" or quiet:  # quiet: no bar, only the error lines
        renderer = LineRenderer(log_every=log_every)
    else:
        renderer = BarRenderer(console, videos, count_done)
    return only_errors(renderer) if quiet else renderer


def stderr_is_terminal() -> bool:
    """Whether progress (on stderr) reaches a terminal that redraws a live bar."""
    import os

    if os.environ.get("TTY_COMPATIBLE") in ("0", "1"):
        return os.environ["TTY_COMPATIBLE"] == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def start_share(report: Reporter, dist, videos: int, mine: int, count_done=None) -> None:
    """What the reporter knows once the videos are shared out among the ranks (``dist``, a
    ``distributed.DistContext``): only rank 0 shows progress (the other ranks print their
    errors), and its bar counts every rank's ``videos``; ``mine`` are this process's."""
    report.videos = mine
    if dist.enabled:
        report.rank = dist.rank
        if not dist.is_main:
            report.sink = only_errors(report.sink)
    if isinstance(report.sink, BarRenderer):
        report.sink.set_videos(videos, count_done)
