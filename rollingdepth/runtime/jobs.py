"""The jobs API: one model loader and one batch loop for every front end that runs the model.

``run-video``, ``eval-depth --dataset`` and the web page load their model with :func:`load_model`.
``run-video`` and ``eval-depth --dataset`` go through :func:`run_batch`: for each video, skip it
when its outputs are complete (with ``Batch.compare_settings``: made with the same settings,
:func:`earlier_run`), load the model the first time one is needed, predict, write the outputs
(in a background thread while the next video is predicted, or right away), and report each step
to the front end's reporter (``Batch.report``: ``video_start``, ``video_done``, ``callback`` ...,
as ``frontends.progress.Reporter`` has them). One failing video does not stop the others; Ctrl-C
stops the batch and leaves no partial file.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rollingdepth.errors import InputError

__all__ = ["Batch", "BatchItem", "earlier_run", "failure_message", "load_model", "run_batch"]


def load_model(cfg, dist=None):
    """The pipeline of ``cfg`` (a ``RunConfig``: checkpoint, dtype, device, accelerator options) on
    this rank's device (``dist``: a ``DistContext``; None: ``cfg.device``), its progress bar off.
    Raises :class:`~rollingdepth.errors.CheckpointError` when it cannot be loaded."""
    from rollingdepth.runtime import loading  # looked up at call time (tests replace it)

    device = cfg.device if dist is None else dist.device(cfg.device)
    pipe = loading.load_pipeline(cfg.checkpoint, cfg.dtype, device, compile=cfg.compile,
                                 channels_last=cfg.channels_last, tf32=cfg.tf32)
    pipe.set_progress_bar_config(disable=True)  # progress goes to the reporter
    return pipe


def failure_message(exc: BaseException, plain: tuple = (ValueError, OSError)) -> str:
    """A video's error in one line: the message of an error of a ``plain`` type (an input error),
    else the type and message."""
    message = str(exc) if isinstance(exc, plain) else f"{type(exc).__name__}: {exc}"
    return " ".join(message.split()) or type(exc).__name__


@dataclass
class BatchItem:
    """One video of a batch: its name in reports, its output stem, how to open it."""

    name: str
    stem: str
    open: Callable[[], object]  # -> VideoSource
    frames: int | None = None  # reported when done (else the result's count)
    cleanup: Callable[[], None] | None = None  # after its prediction, whatever happened
    shared: object = None  # its shots (a ShotsState) when its units are spread over the ranks (runtime.shared_units)


@dataclass
class Batch:
    """How a batch runs: where outputs go, the settings, the ranks, the reporter."""

    out_dir: Path
    cfg: object  # RunConfig
    dist: object  # DistContext
    report: object  # Reporter
    verbose: bool = False
    skip_existing: bool = True
    background: bool = True  # write a video's outputs while the next one is predicted
    skip_reason: str = "outputs complete"
    pipe: object = None  # loaded at the first video that needs it
    on_load_error: Callable[[BaseException, list], None] | None = None  # (error, items left); else a failed video
    start_before_skip: bool = True  # report a video's start before its skipping (else: skip, load, start)
    plain_errors: tuple = (ValueError,)  # errors reported by their message alone (others: with their type)
    results: list = field(default_factory=list)
    compare_settings: bool = False  # skip only outputs made with the same settings (earlier_run)


def run_batch(items: list[BatchItem], batch: Batch) -> bool:
    """Run every item; ``batch.results`` gets one ``VideoResult`` each. Returns whether Ctrl-C stopped it."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollingdepth-outputs") as pool:
        writer = _Writer(batch, pool)
        try:
            for k, item in enumerate(items):
                if not _run_one(item, batch, writer, items[k + 1:]):
                    break
            writer.collect()
        except KeyboardInterrupt:
            writer.cancel.set()  # the video being written stops at its next frame and removes its partial files
            try:
                writer.collect()
            except KeyboardInterrupt:
                pass
            return True
    return False


def _load(batch: Batch, items_left: list) -> bool:
    """Load the model into ``batch.pipe``; False when it cannot be and ``on_load_error`` took the error."""
    try:
        batch.pipe = load_model(batch.cfg, batch.dist)
    except InputError as exc:
        if batch.on_load_error is None:
            raise
        batch.on_load_error(exc, items_left)
        return False
    return True


def _run_one(item: BatchItem, batch: Batch, writer: "_Writer", rest: list) -> bool:
    """Predict one item (and hand its writing over); False when the batch must stop."""
    from rollingdepth.runtime import video_job
    from rollingdepth.runtime.outputs import VideoResult, outputs_complete

    report, name = batch.report, item.name
    if batch.start_before_skip:
        report.video_start(name)
    mine = item.shared is None or batch.dist.is_main  # a video spread over the ranks is rank 0's to report
    if batch.skip_existing:
        skip, note = (earlier_run(batch.out_dir, item.stem, batch.cfg) if batch.compare_settings
                      else (outputs_complete(batch.out_dir, item.stem, batch.cfg), None))
        if skip:
            if mine:
                batch.results.append(VideoResult(name=name, skipped=True))
            report.video_skipped(name, batch.skip_reason)
            return True
        if note:
            report.info(note, video=name)
    if not batch.start_before_skip:  # load first, so that a checkpoint error comes before any progress
        if batch.pipe is None and not _load(batch, [item, *rest]):
            return False
        report.video_start(name)
    progress = report.callback(name)
    started = time.perf_counter()
    try:
        source = item.open()
        if batch.pipe is None:
            progress("load", 0, 1)
            if not _load(batch, [item, *rest]):
                return False
        extra = {"rank": batch.dist.rank, "world_size": batch.dist.world_size} if batch.dist.enabled else {}
        if not batch.background:
            result = video_job.process_video(batch.pipe, source, batch.out_dir, batch.cfg, progress)
            if not result.ok:
                raise RuntimeError(result.error)
            report.end_stage(name)
            report.video_done(name, item.frames or result.frames, time.perf_counter() - started,
                              getattr(result, "outputs", None) or None)
            batch.results.append(VideoResult(name=name, frames=item.frames or result.frames))
            return True
        pending = video_job.predict_video(batch.pipe, source, batch.out_dir, batch.cfg, progress, extra,
                                          _spread(item, batch))
    except KeyboardInterrupt:
        batch.results.append(VideoResult(name=name, error="interrupted"))
        raise
    except Exception as exc:  # one failing video does not stop the others
        failed = writer.failed(name, exc, traceback.format_exc())
        if mine:
            batch.results.append(failed)
        return True
    finally:
        if item.cleanup is not None:
            item.cleanup()
    if pending is None:  # this rank's units of a video spread over the ranks are done; rank 0 writes it
        report.end_stage(name)
        return True
    writer.hand_over(name, pending, progress)
    return True


def _spread(item: BatchItem, batch: Batch):
    """How ``item``'s units are spread over the ranks (``SharedUnits``), or None: it runs here whole."""
    if item.shared is None:
        return None
    from rollingdepth.runtime.reports import UnitReport
    from rollingdepth.runtime.shared_units import SharedUnits

    def unit_done(r: UnitReport) -> None:  # rank 0 hears of the units the others finish
        batch.report.info(f"unit {r.index + 1} (shot {r.shot + 1}, frames {r.first}-{r.first + r.frames - 1}) "
                          f"done on rank {r.rank} in {r.seconds:.1f} s", video=item.name)

    return SharedUnits(batch.dist, item.shared, unit_done)


class _Writer:
    """The video whose outputs are being written in the background (at most one)."""

    def __init__(self, batch: Batch, pool: ThreadPoolExecutor):
        self.batch, self.pool = batch, pool
        self.cancel = threading.Event()
        self.writing = None  # (index in results, future)

    def failed(self, name: str, exc: BaseException, trace: str | None = None):
        from rollingdepth.runtime.outputs import VideoResult

        message = failure_message(exc, self.batch.plain_errors)
        self.batch.report.video_failed(name, message, trace if self.batch.verbose else None)
        return VideoResult(name=name, error=message)

    def hand_over(self, name: str, pending, progress) -> None:
        """The prediction of ``name`` is over: write the previous video's outputs, then start its own."""
        from rollingdepth.runtime.outputs import VideoResult

        report, results = self.batch.report, self.batch.results
        report.end_stage(name)  # the prediction is over; the video counts once written
        for note in pending.notes:
            report.info(note, video=name)
        try:
            self.collect()  # the previous video's outputs
        except KeyboardInterrupt:
            pending.discard()
            results.append(VideoResult(name=name, error="interrupted"))
            raise
        results.append(VideoResult(name=name))
        report.mark(name)  # its writing starts now
        self.writing = (len(results) - 1, self.pool.submit(pending.write, progress, self.cancel))

    def collect(self) -> None:
        """Wait for the video being written and record how it went."""
        from rollingdepth.runtime.outputs import VideoResult

        if self.writing is None:
            return
        slot, future = self.writing
        results, report = self.batch.results, self.batch.report
        name = results[slot].name
        try:
            result = future.result()
            result.name = name
            results[slot] = result
            report.end_stage(name)
            report.video_done(name, result.frames, result.seconds, result.outputs)
        except KeyboardInterrupt:
            if not future.done():
                raise  # Ctrl-C while waiting: the caller cancels the writing and collects again
            results[slot] = VideoResult(name=name, error="interrupted")
            self.writing = None
            raise
        except Exception as exc:
            results[slot] = self.failed(name, exc, "".join(traceback.format_exception(exc)))
        self.writing = None


def earlier_run(out_dir: Path, stem: str, cfg) -> tuple[bool, str | None]:
    """Whether ``--skip-existing`` may skip ``stem``: its outputs are complete and
    ``{stem}_run.json`` records the settings of ``cfg`` (after capping, as the run would use
    them). Else the one line to say when complete outputs are predicted again (None when
    they are not complete)."""
    import json

    from rollingdepth.io.output_formats import RUN_REPORT
    from rollingdepth.runtime.outputs import outputs_complete

    if not outputs_complete(out_dir, stem, cfg):
        return False, None
    report = RUN_REPORT.path(out_dir, stem)
    try:
        changed = _changed_settings(_recorded_settings(json.loads(report.read_text())), cfg)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"{report.name}: cannot read its settings ({type(exc).__name__}); predicting it again"
    if not changed:
        return True, None
    return False, f"outputs made with other settings ({'; '.join(changed)}): predicting it again, replacing them"


def _recorded_settings(report: dict) -> dict:
    """A run report's ``settings``; for a video of several units, with the plan of its first
    shot as it ran (where shots differ, the top level says "per shot"), which is its first unit's."""
    from rollingdepth.runtime.run_config import skip_existing_compared

    recorded = report["settings"]
    shots = report.get("shots") or []
    if int(recorded.get("units") or 1) > 1 and shots and "settings" in shots[0]:
        first = shots[0]["settings"]
        planned = (*skip_existing_compared(planned=True), "snippets_per_dilation", "num_view_auto")
        recorded = {**recorded, **{k: first[k] for k in planned if k in first}}
    return recorded


def _changed_settings(recorded: dict, cfg) -> list[str]:
    """``--option recorded (now given)`` for each setting of ``cfg`` that ``recorded`` (a run
    report's ``settings``) does not hold: those that change the prediction or what the outputs
    hold (their declarations say which, and which are compared as the run uses them), an output
    format's own only when ``cfg`` writes it."""
    import torch

    from rollingdepth.method.device import DTYPES, cpu_has_native_bf16
    from rollingdepth.runtime.estimate import dtype_name
    from rollingdepth.runtime.plan import Plan
    from rollingdepth.runtime.run_config import option_name, skip_existing_compared

    settings = cfg.method_settings()
    given = {name: getattr(cfg, name) for name in skip_existing_compared(planned=False, settings=cfg)}
    auto = recorded.get("num_view_auto") is not None  # the earlier run chose its snippet length
    plan = Plan.build(settings, _planned_frames(recorded),
                      recorded["snippet_lengths"][0] if settings.auto_num_view else None)
    dtype = DTYPES[str(cfg.dtype).lower()]
    if dtype == torch.float16 and str(recorded.get("device", "")).startswith("cpu"):
        dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32  # as fp16 runs on a CPU
    as_run = {**plan.report(settings), "dtype": str(dtype).removeprefix("torch.")}  # as recorded: float32, ...
    given.update({name: as_run[name] for name in skip_existing_compared(planned=True)})
    if settings.auto_num_view != auto:
        given["snippet_lengths"] = "auto" if settings.auto_num_view else given["snippet_lengths"]
        recorded = {**recorded, "snippet_lengths": "auto" if auto else recorded["snippet_lengths"]}

    def text(value) -> str:
        if isinstance(value, str) and value in DTYPES:
            return dtype_name(DTYPES[value])
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return [f"{option_name(name)} {text(recorded.get(name))} (now {text(value)})"
            for name, value in given.items() if _json_value(value) != recorded.get(name)]


def _planned_frames(recorded: dict) -> int:
    """The frame count the recorded plan was made for: the video's, or with shots or segments
    (``units``) the first unit's, which the report's plan is (its snippets at dilation 1)."""
    if int(recorded.get("units") or 1) <= 1:
        return int(recorded["num_frames"])
    i = list(recorded["dilations"]).index(1)
    return int(recorded["snippets_per_dilation"][i]) + int(recorded["snippet_lengths"][i]) - 1


def _json_value(value):
    """``value`` as it reads back from JSON (tuples become lists)."""
    import json

    return json.loads(json.dumps(value))
