"""One video's job for ``run-video``: its prediction over a work folder on disk (resumable),
then its outputs (:mod:`rollingdepth.runtime.outputs`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from rollingdepth.errors import EmptyVideoError
from rollingdepth.io.video_io import InputError, VideoSource
from rollingdepth.method.device import is_out_of_memory
from rollingdepth.runtime.background import prefetch
from rollingdepth.runtime.outputs import PendingOutputs, VideoResult
from rollingdepth.runtime.run_config import SHOT_MODES, RunConfig, option_name, resume_compared
from rollingdepth.runtime.stages import Stage

__all__ = ["fingerprint", "predict_video", "process_video", "work_folder"]

if TYPE_CHECKING:
    import numpy as np
    import torch

    from rollingdepth.runtime.shared_units import SharedUnits
    from rollingdepth.io.shots import Shot
    from rollingdepth.method.pipeline import RollingDepthModel

# callback(stage, done, total): a Stage, or the name of one without fields (the outputs' "write")
Progress = Callable[[Stage | str, int, int], None]
SEEK_AHEAD = 48  # frames: a unit further ahead of the decoder than this seeks (ffmpeg decodes from the keyframe before)


def _oom_advice(pipe: "RollingDepthModel", shape, cfg: RunConfig) -> str:
    """One line: what ran out of memory, with this run's numbers, and what to lower."""
    h, w = pipe.processing_size(shape[1], shape[2], cfg.processing_res)
    n = cfg.snippet_lengths if cfg.snippet_lengths == "auto" else max(cfg.snippet_lengths)
    dtype = str(pipe.dtype).replace("torch.", "")
    tips = [f"a lower {option_name('processing_res')} (now {cfg.processing_res}, {w}x{h})"]
    if dtype == "float32":
        tips.append(f"{option_name('dtype')} bf16 or fp16 (now fp32)")
    tips.append(f"{option_name('unet_batch_size')} 1 (now {cfg.unet_batch_size or 'auto'})")
    tips.append(f"{option_name('max_vae_bs')} 1 (now {cfg.max_vae_bs})" if cfg.max_vae_bs > 1 else "")
    if n == "auto" or n > 2:
        tips.append(f"{option_name('snippet_lengths')} 2 (now {n})")
    return f"out of memory at {w}x{h}, {dtype}, num_view {n}: try " + ", ".join(t for t in tips if t)


def process_video(
    pipe: "RollingDepthModel", source: VideoSource, out_dir: Path, cfg: RunConfig, progress: Progress, report_extra: dict | None = None
) -> VideoResult:
    """Predict depth for one video and write every requested output.

    Frames stream from the file; intermediate results live in a work folder (inside
    ``out_dir``, or ``cfg.work_dir``) that is removed afterwards, also after an error or
    Ctrl-C. ``report_extra`` goes into run.json.
    """
    return predict_video(pipe, source, out_dir, cfg, progress, report_extra).write(progress)


def work_folder(out_dir: Path, stem: str, cfg: RunConfig) -> Path:
    """The work folder of video ``stem`` written to ``out_dir``: the same on every run, so
    that a killed run finds it again (in ``cfg.work_dir`` when given, named after both)."""
    import hashlib

    key = hashlib.sha1(str(Path(out_dir).resolve() / stem).encode()).hexdigest()[:8]
    parent = Path(cfg.work_dir).expanduser() if cfg.work_dir else Path(out_dir)
    return parent / f".{stem}.rollingdepth-work-{key}"


def fingerprint(source: VideoSource, cfg: RunConfig, pipe: "RollingDepthModel") -> dict:
    """What must match for a run to resume: the input (path, size, modification time, frame
    count) and, by its command-line name, every setting that changes the prediction or how it is
    computed (:func:`~rollingdepth.runtime.run_config.resume_compared`): the dtype and device as
    the model runs, a cut list by its contents."""
    files = [source.path] if source.images is None else source.images
    stats = [f.stat() for f in files]
    fp = {
        "input": str(Path(source.path).resolve()),
        "input bytes": sum(st.st_size for st in stats),
        "input modified": max(st.st_mtime for st in stats),
        "input frames": source.frame_count,
    }
    as_run = {"dtype": str(pipe.dtype).replace("torch.", ""), "device": pipe.unet.device.type,
              "shots": cfg.shots if cfg.shots in SHOT_MODES else _file_digest(Path(cfg.shots).expanduser())}
    for name in resume_compared():
        fp[option_name(name)] = as_run[name] if name in as_run else getattr(cfg, name)
    return fp


def _file_digest(path: Path) -> str:
    import hashlib

    return "sha1:" + hashlib.sha1(path.read_bytes()).hexdigest()


def video_shots(source: VideoSource, cfg: RunConfig, store, expected: int, progress: Progress) -> list[Shot]:
    """The shots of the frames to process (``cfg.shots``): found (a pass over the frames, kept in
    ``store`` so that a resumed run does not look again), read from a cut list, or one."""
    from rollingdepth.io.shots import shots_from_cuts
    from rollingdepth.runtime.checkpoints import ShotsState

    if cfg.shots == "none" or expected <= 0:
        return shots_from_cuts([], max(expected, 1), "auto")
    state = store.resumed(ShotsState)
    if state is None:
        state = shots_state(source, cfg, expected, progress)
        store.checkpoint(state)
    if state.frames <= 0:
        raise EmptyVideoError(f"{source.path}: the video has no frames")
    return shots_from_cuts(state.cuts, state.frames, state.found_by)


def shots_state(source: VideoSource, cfg: RunConfig, expected: int, progress: Progress):
    """The cuts of the frames to process (``cfg.shots`` auto or a cut list): a ``ShotsState``."""
    from rollingdepth.io.shots import detect_cuts
    from rollingdepth.runtime.checkpoints import ShotsState

    if cfg.shots == "auto":
        counted = _Counted(prefetch(source.frames(cfg.start_frame, cfg.max_frames)), expected, progress)
        cuts = detect_cuts(counted)
        return ShotsState(cuts, "auto", counted.seen)
    return ShotsState(listed_cuts(source, cfg, expected), "cut list", expected)


def listed_cuts(source: VideoSource, cfg: RunConfig, expected: int) -> list[int]:
    """The cuts of the cut list ``cfg.shots`` within the ``expected`` frames to process, counted
    from ``--from``; a list that does not fit ``source`` (unreadable, a frame past its end, a
    timecode at its fps) raises one ValueError naming the file and line. run-video calls this
    as it probes its inputs, so that a bad list is said before the model loads."""
    from rollingdepth.io.shots import read_cut_list

    listed = read_cut_list(Path(cfg.shots).expanduser(), source.fps, source.frame_count)
    return [s.first - cfg.start_frame for s in listed[1:] if cfg.start_frame < s.first < cfg.start_frame + expected]


def frames_to_process(source: VideoSource, cfg: RunConfig) -> int:
    """The frames a run of ``source`` processes (``--from``, ``--frames``), as counted before decoding."""
    expected = source.frame_count - cfg.start_frame
    return min(expected, cfg.max_frames) if cfg.max_frames > 0 else expected


def spread_shots(source: VideoSource, cfg: RunConfig):
    """The shots of a video whose units are to be spread over the ranks (a ``ShotsState``), or
    None when it is one unit (it runs whole on one rank). With ``--shots auto`` the cuts are
    found here, once, for every rank."""
    from rollingdepth.io.shots import shots_from_cuts
    from rollingdepth.runtime.checkpoints import ShotsState

    expected = frames_to_process(source, cfg)
    if expected <= 0 or (cfg.shots == "none" and (cfg.segment_frames <= 0 or expected <= cfg.segment_frames)):
        return None
    if cfg.shots == "none":
        state = ShotsState([], "auto", expected)
    else:
        state = shots_state(source, cfg, expected, lambda stage, done, total: None)
    shots = shots_from_cuts(state.cuts, state.frames, state.found_by)
    return state if len(_plan_units(shots, cfg)) > 1 else None


def _plan_units(shots: list[Shot], cfg: RunConfig) -> list:
    """The units of a video of ``shots``: overlaps of three times the largest snippet span of a segment."""
    from rollingdepth.runtime.plan import largest_span, plan_units

    span = largest_span(cfg.method_settings(), cfg.segment_frames)
    return plan_units([(s.first, s.count) for s in shots], cfg.segment_frames, span)


def _units_note(stem: str, shots: list[Shot], units: list) -> str:
    """One line for the user: the shots found and how many ran in segments."""
    cuts = [str(s.first) for s in shots[1:]]
    where = f"cuts at frames {', '.join(cuts[:6])}{', ...' if len(cuts) > 6 else ''}" if cuts else "no cut"
    segmented = len({u.shot for u in units if u.segments > 1})
    return f"{stem}: {len(shots)} shot(s), {where}; {segmented} shot(s) in segments; {len(units)} units"


def _check_depth_points(cfg: RunConfig, shots: list[Shot]) -> None:
    """Before the run: every shot has two known distances or more (else ``InputError``)."""
    from rollingdepth.io.depth_points import read_depth_points

    points = read_depth_points(Path(cfg.depth_points).expanduser())
    start = cfg.start_frame
    missing = [s for s in shots if len(points.in_frames(start + s.first, start + s.stop)) < 2]
    if missing:
        spans = ", ".join(f"{start + s.first}..{start + s.stop - 1}" for s in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(f"{cfg.depth_points}: {len(missing)} of {len(shots)} shots have fewer than two known distances "
                         f"(frames {spans}); add points there, or give {option_name('depth_range')} NEAR,FAR for them")


class _Counted:
    """Frames passed through, counted, with progress of the ``shots`` stage."""

    def __init__(self, frames, expected: int, progress: Progress):
        self.frames, self.expected, self.progress, self.seen = frames, expected, progress, 0

    def __iter__(self):
        self.progress(Stage("shots"), 0, self.expected)
        for frame in self.frames:
            self.seen += 1
            if self.seen % 16 == 0:
                self.progress(Stage("shots"), self.seen, max(self.seen, self.expected))
            yield frame
        self.progress(Stage("shots"), self.seen, self.seen)


def predict_video(
    pipe: "RollingDepthModel", source: VideoSource, out_dir: Path, cfg: RunConfig, progress: Progress,
    report_extra: dict | None = None, shared: "SharedUnits | None" = None
) -> "PendingOutputs | None":
    """The prediction of one video (the accelerator's part of :func:`process_video`), run by
    :func:`rollingdepth.runtime.passes.run` over a :class:`~rollingdepth.runtime.stores.DiskStore`.

    The store's work folder (:func:`work_folder`) keeps what is complete; a run of the same
    input with the same settings resumes from it (``cfg.resume``; otherwise it is discarded
    first). A run with other settings is refused with one line saying which.

    ``shared``: the video's units are spread over the launcher's ranks
    (:mod:`rollingdepth.runtime.shared_units`): every rank calls this, rank 0 alone opens the
    work folder's store and gets the outputs to write; the other ranks get None.
    """
    import errno
    import shutil

    import torch

    started = time.perf_counter()
    workdir = work_folder(out_dir, source.stem, cfg)
    main = shared is None or shared.dist.is_main  # the process that owns the work folder's journal
    if main and not cfg.resume and workdir.exists():
        shutil.rmtree(workdir)
    resuming = workdir.exists()
    pending = PendingOutputs(source, out_dir, cfg, workdir, started, report_extra)
    try:
        generator = torch.Generator(device=pipe.unet.device).manual_seed(cfg.seed)
        expected = frames_to_process(source, cfg)
        if source.frame_count and expected <= 0:
            raise InputError(f"{source.path}: {option_name('start_frame')} {cfg.start_frame} is beyond the end of the video ({source.frame_count} frames)")
        open_store = lambda: _open_store(source, cfg, pipe, workdir)  # noqa: E731
        store = pending.store = open_store() if shared is None else shared.open_on_main(open_store)
        if store is not None:
            pending.notes += _resume_notes(source.stem, store, resuming)
        pending.estimate_s = _estimate(pipe, expected, source, cfg)
        try:
            args = RunArgs(expected, generator, progress)
            # 1. The shots: known before the run (a pass of their own, a cut list, an earlier run's), or looked
            #    for in the frames as the run encodes them when the video is one unit unless it has cuts
            shots = None
            if shared is None and _cuts_while_encoding(cfg, store, expected):
                pending.result, shots = _run_finding_cuts(pipe, _decoded(source, store, cfg, expected, pending), store, cfg,
                                                          args)
                if shots is not None and pending.kept is not None:  # the units decode their frames again
                    pending.kept.discard()
            elif shared is None:
                shots = video_shots(source, cfg, store, expected, progress)
            else:
                shots = shared.video_shots(store)
            # 2. The prediction of the shots, unless the run that found no cut has made it
            if pending.result is None and not _run_shots(pipe, source, store, cfg, shots, args, pending, shared):
                return None  # another rank writes the outputs
        except EmptyVideoError:
            raise EmptyVideoError(f"{source.path}: the video has no frames") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC and store is not None:
                raise store.no_space_error() from None
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RuntimeError(_oom_advice(pipe, (0, *source.size), cfg)) from None
            raise
        auto = pending.result.num_view_auto
        if auto:
            pending.notes.append(f"{source.stem}: {option_name('snippet_lengths')} auto chose {auto['num_view']} ({auto['reason']})")
        _correct_estimate(pipe, cfg, pending)
        return pending
    except BaseException:
        if main:
            pending.discard()
        raise


@dataclass(frozen=True)
class RunArgs:
    """What each way of running a video's prediction takes besides the model, the input and the store."""

    expected: int  # frames to process (0: not known)
    generator: "torch.Generator"  # the seeded initial noise
    progress: Progress


def _run_shots(pipe: "RollingDepthModel", source: VideoSource, store, cfg: RunConfig, shots: list[Shot], args: RunArgs,
               pending: PendingOutputs, shared: "SharedUnits | None") -> bool:
    """The prediction of a video whose shots are known, into ``pending.result``: one run over
    the video's store when it is one unit, else its units (spread over the ranks when
    ``shared``). False when another rank writes the outputs."""
    from rollingdepth.runtime.passes import run
    from rollingdepth.runtime.shared_units import run_shared_units
    from rollingdepth.runtime.units import run_units

    expected, generator, progress = args.expected, args.generator, args.progress
    if cfg.depth_points and not cfg.depth_range:
        _check_depth_points(cfg, shots)
    units = _plan_units(shots, cfg)
    if len(units) == 1 and shared is None:  # the video is one unit: one run over the video's own store
        frames = prefetch(_decoded(source, store, cfg, expected, pending))
        pending.result = run(pipe, frames, store, cfg.method_settings(), generator=generator, callback=progress,
                             num_frames_hint=expected or None, keep_snippets=cfg.save_snippets)
        return True
    if cfg.save_snippets:
        raise InputError(f"{source.path}: {option_name('save_snippets')} needs the video in one unit; it has "
                         f"{len(shots)} shots in {len(units)} units (add {option_name('shots')} none and "
                         f"{option_name('segment_frames')} 0)")
    job = _units_job(pipe, source, cfg, shots, units, progress,
                     pending.workdir if shared is None else shared.folder(pending.workdir))
    if shared is None:
        pending.result = run_units(pipe, store, cfg.method_settings(), job)
    else:
        pending.result = run_shared_units(pipe, store, cfg.method_settings(), job, shared.at(pending.workdir))
        if pending.result is None:
            return False
    pending.notes.append(_units_note(source.stem, shots, units))
    pending.notes += [f"{source.stem}: {line}" for shot in pending.result.shots or [] for line in shot.warnings or []]
    return True


def _decoded(source: VideoSource, store, cfg: RunConfig, expected: int, pending: PendingOutputs) -> Iterable[np.ndarray]:
    """The run's frames, decoded once in order from ``cfg.start_frame``; kept on the way in the work
    folder (``pending.kept``) when an output takes them and that is cheap on disk
    (:mod:`rollingdepth.runtime.kept_frames`), unless the run resumes past its encoding (it would
    not decode them)."""
    from rollingdepth.runtime.checkpoints import EncodeState
    from rollingdepth.runtime.kept_frames import KEEP_FILE, KeptFrames, worth_keeping

    frames = source.frames(cfg.start_frame, cfg.max_frames)
    encoded = store.resumed(EncodeState)
    if (encoded is not None and encoded.complete) or not worth_keeping(cfg, expected, tuple(source.size), pending.workdir):
        return frames
    pending.kept = KeptFrames(pending.workdir / KEEP_FILE, tuple(source.size), expected)
    return pending.kept.wrap(frames)


def _cuts_while_encoding(cfg: RunConfig, store, expected: int) -> bool:
    """Whether ``--shots auto`` looks for cuts in the frames as the run encodes them, not in a pass
    of their own first: the video is one unit unless it has cuts (no segments, no known distances
    to check per shot first) and no earlier run of it found its cuts already."""
    from rollingdepth.runtime.checkpoints import ShotsState

    return (cfg.shots == "auto" and expected > 0 and (cfg.segment_frames <= 0 or expected <= cfg.segment_frames)
            and not (cfg.depth_points and not cfg.depth_range) and store.resumed(ShotsState) is None)


def _shots_of(state) -> list[Shot]:
    from rollingdepth.io.shots import shots_from_cuts

    return shots_from_cuts(state.cuts, state.frames, state.found_by)


def _run_finding_cuts(pipe: "RollingDepthModel", decoded: Iterable[np.ndarray], store, cfg: RunConfig, args: RunArgs):
    """The video encoded as one run while a thread looks for cuts in the frames (:class:`_CutFinder`),
    then, with the cuts known: ``(the run's result, None)`` when the video is one unit after all, else
    ``(None, its shots)``: the encoding is not used, the shots' units encode their frames.

    A resumed run whose frames were all encoded before found no cut then (it would have stopped
    there), so it does not look again."""
    from rollingdepth.runtime.checkpoints import ShotsState
    from rollingdepth.runtime.passes import VideoRun

    video_run = VideoRun(pipe, store, cfg.method_settings(), generator=args.generator, callback=args.progress,
                         num_frames_hint=args.expected or None, keep_snippets=cfg.save_snippets)
    finder = _CutFinder(decoded)
    encoded = video_run.encode_video(prefetch(finder))
    state = finder.state or ShotsState([], "auto", encoded.num_frames)  # no frame went by: none was encoded now
    store.checkpoint(state)
    if state.cuts or 0 < cfg.segment_frames < state.frames:
        return None, _shots_of(state)
    return video_run.predict(encoded), None


class _CutFinder:
    """Frames passed on as they come while a thread looks for cuts in them (:func:`detect_cuts`);
    after the last one, ``state`` holds the cuts (a ``ShotsState``)."""

    def __init__(self, frames):
        self.frames, self.state = frames, None

    def __iter__(self):
        import queue
        import threading

        from rollingdepth.io.shots import detect_cuts
        from rollingdepth.runtime.checkpoints import ShotsState

        q: queue.Queue = queue.Queue(maxsize=8)
        end, found = object(), {}

        def fed():
            while (item := q.get()) is not end:
                yield item

        def detect():
            try:
                found["cuts"] = detect_cuts(fed())
            except BaseException as exc:  # handed to the run at the last frame
                found["error"] = exc
                while q.get() is not end:  # let the feeder finish
                    pass

        thread = threading.Thread(target=detect, daemon=True, name="rollingdepth-shots")
        thread.start()
        seen = 0
        try:
            for frame in self.frames:
                q.put(frame)
                seen += 1
                yield frame
        finally:
            q.put(end)
        thread.join()
        if "error" in found:
            raise found["error"]
        self.state = ShotsState(found["cuts"], "auto", seen)


def _resume_notes(stem: str, store, resuming: bool) -> list[str]:
    """What the user is told of the work folder found: where the run resumes, what is done again."""
    name = store.workdir.name
    notes = [f"{stem}: resumed from {name} (after {store.journal.entries[-1]['stage']})"] if (
        resuming and store.journal.entries) else []
    return notes + [f"{stem}: a damaged file of stage {stage} in {name} is computed again" for stage in store.journal.rolled_back]


def _units_job(pipe: "RollingDepthModel", source: VideoSource, cfg: RunConfig, shots: list[Shot], units: list,
               progress: Progress, spill_dir: Path):
    """What ``run_units`` needs of a video of several units (its ``shots`` and ``units``); the
    frames two segments share are kept in ``spill_dir``."""
    import torch

    from rollingdepth.io.depth_points import read_depth_points
    from rollingdepth.runtime.units import FrameCursor, KnownPoints, UnitsJob

    # an input that seeks is reopened at a unit far ahead (images: at any unit ahead), not decoded up to it
    skip_limit = 0 if source.images is not None else SEEK_AHEAD if source.seekable else None
    cursor = FrameCursor(lambda first: source.frames(cfg.start_frame + first), spill_dir=spill_dir, skip_limit=skip_limit)
    points = KnownPoints(read_depth_points(Path(cfg.depth_points).expanduser()), cfg.start_frame) if cfg.depth_points else None
    return UnitsJob(shots, units, cursor, lambda: torch.Generator(device=pipe.unet.device).manual_seed(cfg.seed), progress, points)


def _open_store(source: VideoSource, cfg: RunConfig, pipe: "RollingDepthModel", workdir: Path):
    """The work folder's store (created, or resumed when its fingerprint matches); a mismatch is
    an ``InputError`` saying what differs."""
    from rollingdepth.runtime.stores import DiskStore, ResumeMismatch

    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return DiskStore(workdir, fingerprint=fingerprint(source, cfg, pipe),
                         elsewhere=f"pass {option_name('work_dir')} on a larger disk")
    except ResumeMismatch as exc:
        said = "; ".join(f"{k} {_brief(old)} then, {_brief(new)} now" for k, (old, new) in exc.differences.items())
        raise InputError(f"{source.path}: an unfinished run of it with other settings or input is in {workdir} "
                         f"({said}); run again with {option_name('resume', off=True)} to discard it, or as before to resume it") from None


def _estimate(pipe: "RollingDepthModel", frames: int, source: VideoSource, cfg: RunConfig) -> float | None:
    """The estimated seconds of this video's run (:mod:`rollingdepth.runtime.estimate`), or None."""
    from rollingdepth.runtime.estimate import Estimate

    try:
        return round(Estimate(pipe, frames, tuple(source.size), cfg.method_settings()).seconds, 3) if frames > 0 else None
    except Exception:  # an estimate must never stop a run
        return None


def _correct_estimate(pipe: "RollingDepthModel", cfg: RunConfig, pending: PendingOutputs) -> None:
    """The time estimate's cached throughput corrected by what this run measured, when far off
    (:func:`rollingdepth.runtime.estimate.correct_throughput`); silent, as the estimate is."""
    from rollingdepth.runtime.estimate import correct_throughput

    result = pending.result
    try:
        settings = cfg.method_settings()
        # the lengths it ran: one piece's plan, else (units, each its own) the ones given, or the estimate's default
        lengths = result.plan.snippet_lengths if result.plan else (None if settings.auto_num_view else settings.snippet_lengths)
        correct_throughput(pipe, tuple(result.size), settings, result.counts, result.timings, lengths)
    except Exception:  # an estimate must never stop a run
        pass


def _brief(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else "..." + text[-37:]

