"""``rollingdepth-app``: a web page (Gradio) for video depth.

Thin glue over the code ``run-video`` runs: the model is loaded by the jobs API's loader
(:func:`~rollingdepth.runtime.jobs.load_model`), the page's settings become a
:class:`~rollingdepth.runtime.run_config.RunConfig` (``RunConfig.build(preset, overrides)``), the upload
becomes a :class:`~rollingdepth.io.video_io.VideoSource`, and
:func:`~rollingdepth.runtime.video_job.process_video` writes the same files as ``run-video`` into the
user's own folder; its progress callback drives the page's progress bar and stops the job
when the user cancels. One job runs on the device at a time; the others wait in the queue.

Start it with ``rollingdepth-app`` (or ``python -m rollingdepth.frontends.app``); ``--help`` lists the
options. Needs the ``app`` extra: ``pip install ".[app]"``.
"""

import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import typer

from rollingdepth.frontends.app_files import (Workspace, check_not_truncated, extract_frames, keep_frames, kept_frame,
                                              parse_duration, safe_stem, zip_folder)
from rollingdepth.frontends.command import EXIT_INTERRUPTED, EXIT_USAGE, hdr_note, usage_error
from rollingdepth.frontends.options import HELP_FLAGS, CommandOption, Param, command_signature, declared
from rollingdepth.io.output_formats import RUN_REPORT, output_format, output_formats, switches
from rollingdepth.io.stereo import DEFAULT_CONVERGENCE, LAYOUTS, StereoFrames, pack
from rollingdepth.io.video_io import VIDEO_EXTENSIONS, InputError
from rollingdepth.method.settings import DEFAULT_CHECKPOINT

__all__ = ["AppSettings", "DepthService", "JobOutcome", "anaglyph_preview", "build_page", "main"]

PAGE_PRESETS = ("fast", "fast1024", "full", "paper")
COLOUR_MAPS = ("Spectral_r", "Greys_r", "inferno", "magma", "viridis", "turbo", "plasma")
SNIPPET_CHOICES = ("2", "3", "4", "auto")
# the page's controls of settings, by setting, with their labels: a message naming a setting's option names
# the control instead (_page_message)
PAGE_LABELS = {"preset": "Preset", "processing_res": "Resolution", "dilations": "Dilations",
               "snippet_lengths": "Snippet length", "refine_step": "Refinement steps", "max_frames": "Frames",
               "cmaps": "Colour map", "save_stereo": "Stereo 3D", "stereo_strength": "Stereo strength (% of width)"}
NO_STEREO = "none"  # the Stereo 3D choice of no stereo video
PREVIEW_EDGE = 640  # the stereo preview's frames are kept with their longer edge at most this many pixels
SAMPLE_NAME = "synthetic_scene.mp4"
DEPTH_LABEL = "inverse depth (near = large)"
CPU_START_S = 180.0  # on a CPU the page starts at the highest resolution whose sample run takes about this long
CANCEL_WAIT_S = 600.0  # Cancel waits this long (at most) for the job to stop before it says so
# For tests: "STAGE:PATH" holds a job in its progress report at the first STAGE (a prefix, e.g.
# "snippets") while the file PATH exists; PATH.held is written once the job is held there.
HOLD_ENV = "ROLLINGDEPTH_APP_HOLD"


class JobCancelled(Exception):
    """Raised from the progress callback when the user pressed Cancel."""


@dataclass
class AppSettings:
    """The command line of ``rollingdepth-app``."""

    checkpoint: str = DEFAULT_CHECKPOINT
    dtype: str = "fp16"
    device: str | None = None
    max_upload_mb: float = 200.0
    max_frames: int = 1000
    max_res: int = 1024
    ttl_s: float = 3600.0
    sample: Path | None = None


@dataclass
class JobOutcome:
    """What one press of Run produced: an error message, or the outputs of a finished run."""

    message: str
    ok: bool = False
    run_dir: Path | None = None
    stem: str = ""
    frames: int = 0
    size: tuple[int, int] = (0, 0)
    depth_range: tuple[float, float] = (0.0, 1.0)
    cmap: str = "Spectral_r"
    downloads: list[Path] = field(default_factory=list)
    sbs_video: Path | None = None
    stereo: dict | None = None  # what the stereo preview needs (a run with a layout): frames, firsts, ranges, convergence

    def view_state(self) -> dict | None:
        """What the frame slider and the stereo preview need (kept on the server, per session)."""
        if not self.ok:
            return None
        return {"npy": str(output_format("npy").path(self.run_dir, self.stem)), "frames": self.frames, "cmap": self.cmap,
                "range": list(self.depth_range), "stereo": self.stereo}


def _downloads(run_dir: Path, stem: str, cfg) -> list[Path]:
    """The files of a run that the page offers (each format declares whether it is offered); a
    folder of frames is offered as a zip (and removed)."""
    files = []
    for fmt in output_formats():
        for name in fmt.names(stem, cfg) if fmt.download else []:
            path = run_dir / name
            if path.is_dir():
                files.append(zip_folder(path, run_dir / f"{name}.zip"))
                shutil.rmtree(path, ignore_errors=True)
            else:
                files.append(path)
    return files


def anaglyph_preview(image, prediction, strength: float, near_range: tuple[float, float],
                     convergence: float = DEFAULT_CONVERGENCE):
    """The red-cyan anaglyph (uint8 ``[H, W, 3]``) of ``image`` (uint8 ``[H, W, 3]``) and its
    ``prediction`` (``[h, w]``), its shot's inverse depth spanning ``near_range``, as the stereo
    videos render it."""
    frames = StereoFrames(strength, convergence, [near_range], (0,))
    return pack(*frames.eyes(0, image, prediction), "anaglyph")


def find_sample() -> Path | None:
    """The bundled sample clip: in the source tree, or under the current folder."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        path = base / "data" / "samples" / SAMPLE_NAME
        if path.is_file():
            return path
    return None


def _parse_ints(text: str, name: str) -> list[int]:
    """The integers of a text field, errors named by the field's label."""
    from rollingdepth.option_spec import parse_numbers

    label = _label(name)
    values = parse_numbers(text, label)
    if not values:
        raise ValueError(f"{label}: give at least one value, e.g. 1,25")
    return values


@dataclass(frozen=True)
class PageForm:
    """A Run's form as the page's fields hold it, each field a component of the page by the same name (values as
    typed: :meth:`DepthService.config` checks them and names the field by its label)."""

    preset: str | None = "fast"
    res: float | None = None
    dilations: str | None = None
    snippet: str | None = "3"
    refine: float | None = 0
    cmap: str | None = None
    frames: float | None = 0
    stereo: str | None = None
    strength: float | str | None = None

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def _stereo_overrides(form: PageForm) -> dict:
    """The stereo settings of the form: a layout or none, and the strength (RunConfig checks them)."""
    layout = str(form.stereo or NO_STEREO).strip()
    strength = form.strength
    strength = output_format("stereo").more_option("stereo_strength")[0] if strength in (None, "") else strength
    return {"save_stereo": [] if layout == NO_STEREO else [layout],
            "stereo_strength": _parse_float(strength, "stereo_strength")}


def _parse_float(value, name: str) -> float:
    """A number of the form, errors named by the field's label."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{_label(name)}: {value!r} is not a number") from None


def _page_message(exc: BaseException) -> str:
    """One line, with the option that RunConfig's message names replaced by the label of the page's
    control of that setting (:data:`PAGE_LABELS`)."""
    from rollingdepth.runtime.run_config import option_name

    text = " ".join(str(exc).split()) or type(exc).__name__
    for name, label in PAGE_LABELS.items():
        if text.startswith(option_name(name) + ":"):
            return label + text[len(option_name(name)):]
    return text


class DepthService:
    """The app without its page: the model, the device lock, the users' folders, cancelling."""

    def __init__(self, pipe, settings: AppSettings, workspace: Workspace, log: Callable[[str], None] | None = None):
        self.pipe = pipe
        self.settings = settings
        self.workspace = workspace
        self.device_lock = threading.Lock()  # one inference job at a time on the device
        self._jobs_of: dict[str, tuple[threading.Event, threading.Event]] = {}  # session -> (cancel, ended)
        self._cancel_lock = threading.Lock()
        self._log = log or (lambda message: print(f"rollingdepth-app: {message}", file=sys.stderr, flush=True))
        self._jobs = 0
        self.sample = None
        if settings.sample is not None:  # a copy inside the app's folder, so the page may serve it
            folder = workspace.root / "sample"
            folder.mkdir(exist_ok=True)
            self.sample = folder / settings.sample.name
            shutil.copyfile(settings.sample, self.sample)

    # ------------------------------------------------------------------ settings
    def preset_values(self, preset: str) -> PageForm:
        """The page's fields as a preset sets them (resolution capped at --max-res)."""
        from rollingdepth.runtime.run_config import RunConfig

        cfg = RunConfig.build(preset, {})
        lengths = cfg.snippet_lengths
        return PageForm(preset=preset, res=min(cfg.processing_res or self.settings.max_res, self.settings.max_res),
                        dilations=",".join(str(d) for d in cfg.dilations),
                        snippet="auto" if lengths == "auto" else str(lengths[0]), refine=cfg.refine_step)

    def config(self, form: PageForm):
        """The RunConfig of a Run: the preset, then the page's fields, as ``run-video`` builds it."""
        from rollingdepth.runtime.run_config import RunConfig

        res = int(form.res or 0)
        if not 1 <= res <= self.settings.max_res:
            raise ValueError(f"{_label('processing_res')}: {res} is outside 1..{self.settings.max_res} (the app's {APP_OPTIONS['max_res'].name})")
        snippet = str(form.snippet or "3").strip().lower()
        frames = int(form.frames or 0)
        if frames < 0:
            raise ValueError(f"{_label('max_frames')}: {frames} must be 0 (the whole video) or more")
        overrides = dict(
            checkpoint=self.settings.checkpoint,
            dtype=self.settings.dtype,
            device=self.settings.device,
            processing_res=res,
            dilations=_parse_ints(form.dilations, "dilations"),
            snippet_lengths="auto" if snippet == "auto" else _parse_ints(snippet, "snippet_lengths"),
            refine_step=int(form.refine or 0),
            cmaps=[str(form.cmap or "Spectral_r").strip()],
            max_frames=frames,
            **_stereo_overrides(form),
            **switches(lambda fmt: fmt.download),  # the formats the page offers
        )
        return RunConfig.build(form.preset or "fast", overrides)

    # ------------------------------------------------------------------ a job
    def cancel(self, session: str, wait_s: float = CANCEL_WAIT_S) -> bool | None:
        """Stop the session's job at its next progress report (after its current batch) and
        wait (bounded) until it has stopped and its files are removed: True then, None when it
        is still running after ``wait_s``, False when the session has no job."""
        with self._cancel_lock:
            job = self._jobs_of.get(session)
        if job is None:
            return False
        cancel, ended = job
        cancel.set()
        return True if ended.wait(wait_s) else None

    def run(self, session: str, upload: str | Path | None, form: PageForm,
            progress: Callable[[str, int, int], None] | None = None) -> JobOutcome:
        """One press of Run: check the upload, predict, collect the downloads.

        Never raises for bad input: the outcome carries the one-line message. A cancelled or
        failed job leaves no files behind.
        """
        event, ended = threading.Event(), threading.Event()
        with self._cancel_lock:
            self._jobs_of[session] = (event, ended)
        run_dir = None
        try:
            if upload is None or str(upload) == "":
                return JobOutcome("Choose a video or a zip of frames first (or press “Use the sample clip”).")
            upload = Path(upload)
            shown = upload.name
            if not self.workspace.contains(upload):
                return JobOutcome(f"{shown}: not a file uploaded to this page")
            if not upload.is_file():
                return JobOutcome(
                    f"{shown}: the upload is no longer on the server (files are kept for "
                    f"{_duration_text(self.settings.ttl_s)}); upload it again"
                )
            limit = self.settings.max_upload_mb
            if upload.stat().st_size > limit * 2**20:
                return JobOutcome(f"{shown}: {upload.stat().st_size / 2**20:.1f} MB is over this page's limit of {limit:g} MB")
            try:
                cfg = self.config(form)
            except ValueError as exc:
                return JobOutcome(_page_message(exc))
            run_dir = self.workspace.new_run(session)
            try:
                source = self._source(upload, run_dir, cfg)
                outcome = self._predict(source, run_dir, cfg, shown, event, progress)
            except InputError as exc:
                outcome = JobOutcome(self._tidy(exc, run_dir, shown))
            except Exception as exc:
                self._log(f"{shown}: could not be read\n{traceback.format_exc()}")
                outcome = JobOutcome(f"{shown}: could not be read ({type(exc).__name__}: {self._tidy(exc, run_dir, shown)})")
            if not outcome.ok:  # a failed or cancelled job leaves nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            return outcome
        finally:
            if run_dir is not None:
                self.workspace.release(run_dir)
            with self._cancel_lock:
                if self._jobs_of.get(session, (None,))[0] is event:
                    del self._jobs_of[session]
            ended.set()

    def _source(self, upload: Path, run_dir: Path, cfg):
        """The upload as a video source inside the run folder, checked against the page's limits."""
        from rollingdepth.io.video_io import load_source, open_source

        shown = upload.name
        suffix = upload.suffix.lower()
        inputs = run_dir / "input"
        inputs.mkdir()
        if suffix == ".zip":
            limit = int(self.settings.max_upload_mb * 2**20 * 20)  # unpacked size guard
            folder = extract_frames(upload, inputs / safe_stem(shown), self.settings.max_frames, limit)
            (entry,) = open_source(folder)
            source = load_source(entry)
        elif suffix in VIDEO_EXTENSIONS:
            local = inputs / f"{safe_stem(shown)}{suffix}"
            try:
                os.link(upload, local)
            except OSError:
                shutil.copyfile(upload, local)
            source = load_source(local)
            check_not_truncated(local, source.frame_count, shown)
        else:
            kinds = ", ".join(e.lstrip(".") for e in VIDEO_EXTENSIONS)
            raise InputError(f"{shown}: neither a video ({kinds}) nor a zip of frames")
        frames = max(source.frame_count - cfg.start_frame, 0)
        if cfg.max_frames > 0:
            frames = min(frames, cfg.max_frames)
        if frames > self.settings.max_frames:
            raise InputError(
                f"{shown}: {frames} frames; this page processes at most {self.settings.max_frames} "
                f"(set {_label('max_frames')} to {self.settings.max_frames} or fewer to process the start of it)"
            )
        return source

    def _predict(self, source, run_dir: Path, cfg, shown: str, event: threading.Event, progress) -> JobOutcome:
        from rollingdepth.runtime.video_job import process_video

        def on_progress(stage, done: int, total: int) -> None:
            stage = str(stage)  # the page shows a Stage (runtime.stages) as its text
            _hold_for_tests(stage)
            if event.is_set():
                raise JobCancelled
            if progress is not None:
                progress(stage, done, total)

        if progress is not None:
            progress("waiting for the device", 0, 1)
        with self.device_lock:
            self._jobs += 1
            job = self._jobs
            started = time.perf_counter()
            self._log(f"job {job} started: {shown}")
            try:
                if event.is_set():
                    raise JobCancelled
                result = process_video(self.pipe, source, run_dir, cfg, on_progress)
            except JobCancelled:
                shutil.rmtree(run_dir, ignore_errors=True)
                self._log(f"job {job} cancelled: {shown}")
                return JobOutcome("Cancelled: the job stopped and its files were removed.")
            except (InputError, ValueError) as exc:
                shutil.rmtree(run_dir, ignore_errors=True)
                self._log(f"job {job} failed: {shown}: {exc}")
                return JobOutcome(self._tidy(exc, run_dir, shown))
            except Exception as exc:
                shutil.rmtree(run_dir, ignore_errors=True)
                self._log(f"job {job} failed: {shown}\n{traceback.format_exc()}")
                return JobOutcome(f"{shown}: the run failed ({type(exc).__name__}: {self._tidy(exc, run_dir, shown)})")
            finally:
                self._log(f"job {job} ended after {time.perf_counter() - started:.1f} s")
        stem = source.stem
        report = RUN_REPORT.load(run_dir, stem)
        stereo = None
        if cfg.save_stereo:
            try:
                stereo = _stereo_state(source, run_dir, cfg, report)
            except Exception:  # the stereo videos are written: only their preview is missing
                self._log(f"{shown}: no stereo preview\n{traceback.format_exc()}")
        shutil.rmtree(run_dir / "input", ignore_errors=True)
        cmap = cfg.cmaps[0]
        downloads = _downloads(run_dir, stem, cfg)
        h, w = report["output_size"]
        message = (f"Done: {shown}, {result.frames} frames at {w}x{h} in {result.seconds:.1f} s. "
                   f"Files are kept for {_duration_text(self.settings.ttl_s)}.")
        if (note := hdr_note(source)) is not None:  # as run-video says it
            message += f" Note: {note}."
        return JobOutcome(message, ok=True, run_dir=run_dir, stem=stem, frames=result.frames, size=(h, w),
                          depth_range=tuple(report["depth_range"]), cmap=cmap, downloads=downloads,
                          sbs_video=output_format("sbs").path(run_dir, stem), stereo=stereo)

    # ------------------------------------------------------------------ before a job
    def first_res(self) -> int:
        """The resolution the page starts at: the fast preset's, or on a CPU the highest that
        runs the sample clip (72 frames of 320x192 without one) in about :data:`CPU_START_S`."""
        res = self.preset_values("fast").res
        if self.pipe is None or self.pipe.unet.device.type != "cpu":
            return res
        from rollingdepth.runtime.estimate import Estimate, quick_res

        frames, size = 72, (192, 320)
        try:
            if self.sample is not None:
                frames, size = _frames_and_size(self.sample)
            form = self.preset_values("fast")
            estimate = Estimate(self.pipe, frames, size, self.config(form).method_settings())
            found = quick_res([estimate], res + 1, CPU_START_S)
        except Exception as exc:  # a start value must never stop the page
            self._log(f"no estimate for the first resolution ({type(exc).__name__}: {exc})")
            return res
        return found[0] if found else res

    def estimate(self, upload: str | Path | None, form: PageForm) -> str:
        """The line ``run-video`` prints before a run with these settings (empty without a
        readable upload); the device's throughput is measured only while no job runs (an
        estimate waits a few seconds for the device)."""
        from rollingdepth.runtime.estimate import estimate_run

        if not upload or not Path(upload).is_file() or not self.workspace.contains(upload):
            return ""
        try:
            cfg = self.config(form)
            frames, size = _frames_and_size(Path(upload))
        except (ValueError, OSError):  # Run says what is wrong
            return ""
        frames = max(frames - cfg.start_frame, 0)
        frames = min(frames, cfg.max_frames) if cfg.max_frames else frames
        if not self.device_lock.acquire(timeout=2):  # a job runs: it is not measured beside it
            return "The estimate comes when the job that runs now has finished."
        try:
            line, _ = estimate_run(self.pipe, [(frames, size)], cfg.method_settings())
        except Exception as exc:  # an estimate must never stop the page
            return f"No time estimate ({type(exc).__name__})."
        finally:
            self.device_lock.release()
        return line

    def _tidy(self, exc: BaseException, run_dir: Path, shown: str) -> str:
        """The message without the server's folders: the user's file by its own name."""
        text = _page_message(exc)
        inputs = run_dir / "input"
        if inputs.exists():
            for path in sorted(inputs.iterdir(), key=lambda p: -len(str(p))):
                text = text.replace(str(path), shown)
        return text.replace(str(self.workspace.root), "…")

    # ------------------------------------------------------------------ one frame
    @staticmethod
    def frame_view(state: dict | None, index: int):
        """Frame ``index`` (1 to N) in its colour map with a colour bar, as uint8 RGB (or None)."""
        if not state:
            return None
        import numpy as np

        from rollingdepth.io.visualize import colorize

        path = Path(state["npy"])
        if not path.is_file():
            return None
        depth = np.load(path, mmap_mode="r")
        i = int(min(max(int(index or 1), 1), depth.shape[0]))  # counted from 1, as the slider counts
        vmin, vmax = state["range"]
        coloured = colorize(np.asarray(depth[i - 1]), state["cmap"], vmin, vmax)
        return _with_colour_bar(coloured, state["cmap"], vmin, vmax, f"frame {i} of {depth.shape[0]}")

    @staticmethod
    def stereo_view(state: dict | None, index: int, strength: float):
        """Frame ``index`` (1 to N) as a red-cyan anaglyph at ``strength`` (uint8 RGB), or None
        without a stereo run (or once its files are gone)."""
        import bisect

        import numpy as np

        stereo = (state or {}).get("stereo")
        path = Path(state["npy"]) if stereo else None
        if path is None or not path.is_file():
            return None
        depth = np.load(path, mmap_mode="r")
        i = int(min(max(int(index or 1), 1), depth.shape[0])) - 1
        image = kept_frame(Path(stereo["frames"]), i)
        if image is None:
            return None
        near_range = stereo["ranges"][bisect.bisect_right(stereo["firsts"], i) - 1]
        return anaglyph_preview(image, np.array(depth[i]), float(strength), tuple(near_range), stereo["convergence"])

    def shutdown(self, wait_s: float = 30.0) -> None:
        """Stop every job, wait for the device (bounded), remove every user's files."""
        with self._cancel_lock:
            jobs = list(self._jobs_of.values())
        for cancel, _ in jobs:
            cancel.set()
        if self.device_lock.acquire(timeout=wait_s):
            self.device_lock.release()
        self.workspace.close()


def _stereo_state(source, run_dir: Path, cfg, report: dict) -> dict:
    """What the stereo preview needs of a finished run: its input frames, kept small (the input is
    removed), and each shot's first frame and inverse-depth range, as the stereo videos use them."""
    import numpy as np

    from rollingdepth.io.stereo import shot_ranges

    firsts = tuple(shot["first"] for shot in report["shots"])
    prediction = np.load(output_format("npy").path(run_dir, source.stem), mmap_mode="r")
    folder = keep_frames(source.frames(cfg.start_frame, len(prediction)), run_dir / "stereo-preview", PREVIEW_EDGE)
    return {"frames": str(folder), "firsts": list(firsts), "ranges": shot_ranges(prediction, firsts),
            "convergence": cfg.convergence}


def _hold_for_tests(stage: str) -> None:
    """Hold a job at a known point while a test acts (:data:`HOLD_ENV`), as a long batch would."""
    spec = os.environ.get(HOLD_ENV)
    if not spec:
        return
    at, _, path = spec.partition(":")
    hold = Path(path)
    if not stage.startswith(at) or not hold.exists():
        return
    Path(f"{hold}.held").write_text(stage)
    while hold.exists():
        time.sleep(0.05)


def _frames_and_size(path: Path) -> tuple[int, tuple[int, int]]:
    """Frame count and (H, W) of a video, or of the images of a zip (``OSError``, ``ValueError``
    when it cannot be read)."""
    import zipfile

    if path.suffix.lower() != ".zip":
        from rollingdepth.io.video_io import load_source

        source = load_source(path)
        return source.frame_count, tuple(source.size)
    import cv2
    import numpy as np

    from rollingdepth.io.video_io import IMAGE_EXTENSIONS

    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS
                     and not Path(n).name.startswith("._")]
            first = cv2.imdecode(np.frombuffer(zf.read(names[0]), np.uint8), cv2.IMREAD_UNCHANGED) if names else None
    except zipfile.BadZipFile as exc:
        raise ValueError(str(exc)) from None
    if first is None:
        raise ValueError(f"{path.name}: no readable frames")
    return len(names), tuple(first.shape[:2])


def _with_colour_bar(image, cmap: str, vmin: float, vmax: float, title: str):
    """Draw ``image`` with a colour bar of ``cmap`` over ``vmin..vmax`` (matplotlib, no pyplot)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    h, w = image.shape[:2]
    width = 6.4
    fig = Figure(figsize=(width, max(2.0, width * 0.82 * h / w + 0.7)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), ax=ax, fraction=0.05, pad=0.02)
    bar.set_label(DEPTH_LABEL, fontsize=9)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _duration_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


# ---------------------------------------------------------------------- the page
def _label(name: str) -> str:
    """The label of the page's control of a setting."""
    return PAGE_LABELS[name]


@dataclass
class _Page:
    """The page's components."""

    upload: object
    sample_btn: object
    preset: object
    res: object
    dilations: object
    snippet: object
    refine: object
    frames: object
    cmap: object
    stereo: object
    strength: object
    run_btn: object
    cancel_btn: object
    estimate: object
    status: object
    video: object
    frame: object
    frame_image: object
    stereo_image: object
    downloads: object
    view: object

    FORM = PageForm.fields()  # the components that hold a Run's form

    def outputs(self) -> list:
        return [self.status, self.video, self.frame, self.frame_image, self.stereo_image, self.downloads, self.view]


def build_page(service: DepthService):
    """The Gradio page over ``service`` (not launched)."""
    import gradio as gr

    settings = service.settings
    with gr.Blocks(title="RollingDepth: video depth", analytics_enabled=False) as page:
        gr.Markdown(
            "## RollingDepth: depth for videos\n"
            "Upload a video (or a zip of its frames), choose the settings and press **Run**. The result is "
            "affine-invariant inverse depth (near = large), the same as `run-video` writes with the same options. "
            f"Model `{Path(settings.checkpoint).name}`, {_model_text(service.pipe)}; one job runs at a time, "
            f"others wait in the queue. Uploads up to {settings.max_upload_mb:g} MB and {settings.max_frames} frames; "
            f"results are kept for {_duration_text(settings.ttl_s)}.",
            elem_id="rd-intro",
        )
        with gr.Row():
            with gr.Column(scale=2):
                controls = _settings_column(service)
            with gr.Column(scale=3):
                results = _results_column()
        _connect(service, _Page(**controls, **results, view=gr.State(None)))
    return page


def _settings_column(service: DepthService) -> dict:
    """The upload, the settings (labelled as PAGE_LABELS says) and the buttons."""
    import gradio as gr

    settings = service.settings
    first = dataclasses.replace(service.preset_values("fast"), res=service.first_res())
    c = {"upload": gr.File(label="Video or zip of frames", file_types=[*VIDEO_EXTENSIONS, ".zip"], elem_id="rd-upload")}
    c["sample_btn"] = gr.Button("Use the sample clip", size="sm", elem_id="rd-sample", visible=service.sample is not None)
    c["preset"] = gr.Dropdown(list(PAGE_PRESETS), value="fast", label=_label("preset"), elem_id="rd-preset")
    c["res"] = gr.Slider(min(16, settings.max_res), settings.max_res, value=first.res, step=8,
                         label=f"{_label('processing_res')} (longer edge)", elem_id="rd-res")
    with gr.Row():
        c["dilations"] = gr.Textbox(first.dilations, label=_label("dilations"), elem_id="rd-dilations")
        c["snippet"] = gr.Dropdown(list(SNIPPET_CHOICES), value=first.snippet, label=_label("snippet_lengths"),
                                   elem_id="rd-snippet")
    with gr.Row():
        c["refine"] = gr.Number(first.refine, label=_label("refine_step"), minimum=0, maximum=50, precision=0,
                                elem_id="rd-refine")
        c["frames"] = gr.Number(0, label=f"{_label('max_frames')} (first N, 0 = all)", minimum=0, precision=0,
                                elem_id="rd-frames")
    c["cmap"] = gr.Dropdown(list(COLOUR_MAPS), value=COLOUR_MAPS[0], label=_label("cmaps"), allow_custom_value=True,
                            elem_id="rd-cmap")
    strength = output_format("stereo").more_option("stereo_strength")[0]
    with gr.Row():
        c["stereo"] = gr.Dropdown([NO_STEREO, *LAYOUTS], value=NO_STEREO, label=_label("save_stereo"), scale=1,
                                  elem_id="rd-stereo")
        c["strength"] = gr.Slider(0, 10, value=strength, step=0.5, label=_label("stereo_strength"), scale=2,
                                  elem_id="rd-strength")
    c["estimate"] = gr.Markdown("", elem_id="rd-estimate")
    with gr.Row():
        c["run_btn"] = gr.Button("Run", variant="primary", elem_id="rd-run")
        c["cancel_btn"] = gr.Button("Cancel", variant="stop", elem_id="rd-cancel")
    return c


def _results_column() -> dict:
    """The status line, the side-by-side video, one frame's depth and the downloads."""
    import gradio as gr

    status = gr.Markdown("", elem_id="rd-status")
    gr.Markdown("**Input and depth**", elem_id="rd-video-label")  # a label above the video, not over its corner
    return {
        "status": status,
        "video": gr.Video(show_label=False, interactive=False, loop=True, elem_id="rd-video"),
        "frame": gr.Slider(1, 2, value=1, step=1, label="Frame", visible=False, elem_id="rd-frame"),
        "frame_image": gr.Image(label="Depth of one frame", type="numpy", format="png", interactive=False,
                                visible=False, elem_id="rd-frame-image"),
        "stereo_image": gr.Image(label="Stereo preview (anaglyph)", type="numpy", format="png", interactive=False,
                                 visible=False, elem_id="rd-stereo-image"),
        "downloads": gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="rd-downloads"),
    }


def _connect(service: DepthService, p: _Page) -> None:
    """What each button, field and slider does."""
    import gradio as gr

    def use_sample():
        return str(service.sample) if service.sample else None

    def _form(values: dict) -> PageForm:  # the Run's form from the components' values
        return PageForm(**{name: values[getattr(p, name)] for name in _Page.FORM})

    def fill_preset(name):
        form = service.preset_values(name)
        return form.res, form.dilations, form.snippet, form.refine

    def estimate(values: dict):
        upload = values[p.upload]  # the file's path, or its raw record (the live estimate skips preprocessing)
        upload = upload.get("path") if isinstance(upload, dict) else upload
        return service.estimate(upload, _form(values))

    def clear(values: dict):
        hidden = gr.update(visible=False, value=None)
        return "", None, gr.update(visible=False, value=1), hidden, hidden, None, None, estimate(values)

    def run(values: dict, request: gr.Request, progress=gr.Progress()):
        def report(stage, done, total):
            progress((done, max(total, 1)), desc=f"{stage} ({done}/{total})", unit="")

        outcome = service.run(request.session_hash, values[p.upload], _form(values), report)
        if not outcome.ok:
            hidden = gr.update(visible=False, value=None)
            return (f"**Error:** {outcome.message}" if not outcome.message.startswith("Cancelled") else outcome.message,
                    None, gr.update(visible=False), hidden, hidden, None, None)
        state = outcome.view_state()
        return (outcome.message, str(outcome.sbs_video),
                gr.update(visible=True, minimum=1, maximum=max(outcome.frames, 2), value=1, step=1),
                gr.update(visible=True, value=service.frame_view(state, 1)),
                gr.update(visible=outcome.stereo is not None, value=service.stereo_view(state, 1, values[p.strength])),
                [str(path) for path in outcome.downloads], state)

    def cancel(request: gr.Request):
        yield "Cancelling: the job stops after its current batch …"
        stopped = service.cancel(request.session_hash)  # waits until the job has stopped
        if stopped is None:
            yield "Cancelling: the job has not stopped yet; it stops after its current batch."
        else:
            yield "Cancelled: the job stopped and its files were removed." if stopped else "Cancelled."

    def show_frame(index, state):
        return service.frame_view(state, index)

    def show_stereo(index, strength, state):  # the run's frame at another strength: no model run
        return service.stereo_view(state, index, strength)

    outputs = p.outputs()
    p.sample_btn.click(use_sample, outputs=p.upload, queue=False, api_visibility="private")
    p.preset.input(fill_preset, inputs=p.preset, outputs=[p.res, p.dilations, p.snippet, p.refine], queue=False,
                   api_visibility="private")
    fields = [p.upload, *(getattr(p, name) for name in _Page.FORM)]
    # Run: the estimate of exactly these settings first (as run-video says it), then the job
    # with one progress bar, on the video's pane
    job = p.run_btn.click(clear, inputs=set(fields), outputs=[*outputs, p.estimate], queue=False,
                          api_visibility="private").then(
        run, inputs=set(fields), outputs=outputs, show_progress_on=[p.video],
        concurrency_limit=1, concurrency_id="inference", api_name="predict",
    )
    # raw values: a number typed digit by digit is not refused (with a message) on its way
    gr.on([field.change for field in fields], estimate, inputs=set(fields), outputs=p.estimate, preprocess=False,
          show_progress="hidden", trigger_mode="always_last", concurrency_limit=1, concurrency_id="estimate",
          api_visibility="private")
    p.cancel_btn.click(cancel, outputs=p.status, cancels=[job], concurrency_limit=None, show_progress="hidden",
                       api_visibility="private")  # queued: its lines stream
    p.frame.change(show_frame, inputs=[p.frame, p.view], outputs=p.frame_image, show_progress="hidden",
                   concurrency_limit=4, concurrency_id="view", api_visibility="private")
    gr.on([p.frame.change, p.strength.change], show_stereo, inputs=[p.frame, p.strength, p.view],
          outputs=p.stereo_image, show_progress="hidden", trigger_mode="always_last", concurrency_limit=4,
          concurrency_id="view", api_visibility="private")


def _model_text(pipe) -> str:
    try:
        return f"{str(pipe.dtype).replace('torch.', '')} on {pipe.unet.device}"
    except Exception:
        return "loaded"


def _theme():
    import gradio as gr

    # System fonts: the page loads nothing from outside the app.
    return gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


# ---------------------------------------------------------------------- command line
cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": HELP_FLAGS})


# the app's own options (its settings' options are RunConfig's), in --help's Options panel
APP_OPTIONS = {
    "host": CommandOption(("--host",), "Address to listen on (0.0.0.0: every interface).", "ADDR"),
    "port": CommandOption(("--port",), "Port to listen on.", "INT", kind=int),
    "max_upload_mb": CommandOption(("--max-upload-mb",), "Largest upload accepted.", "MB", kind=float),
    "max_frames": CommandOption(("--max-frames",), "Most frames one job may process.", "INT", kind=int),
    "max_res": CommandOption(("--max-res",), "Highest processing resolution offered.", "INT", kind=int),
    "results_ttl": CommandOption(("--results-ttl",), "How long a user's uploads and results are kept: 600, 30m, 2h, "
                                 "1d.", "DURATION"),
}


def _serve_params() -> list:
    from rollingdepth.runtime.run_config import run_options

    run = run_options()
    return [Param("checkpoint", run["checkpoint"], DEFAULT_CHECKPOINT, panel="Model", show_default=False),
            Param("dtype", run["dtype"], "fp16", panel="Model"), Param("device", run["device"], None, panel="Model"),
            *declared(APP_OPTIONS, APP_OPTIONS, host="127.0.0.1", port=7860, max_upload_mb=200.0, max_frames=1000,
                      max_res=1024, results_ttl="1h")]


@cli.command()
@command_signature(_serve_params())
def serve(**values) -> None:
    """Serve the RollingDepth web page: upload a video, get its depth."""
    port = values["port"]
    if not 1 <= port <= 65535:
        raise ValueError(f"{APP_OPTIONS['port'].name}: {port} is not a port number (1..65535)")
    for name in ("max_upload_mb", "max_frames", "max_res"):
        if values[name] <= 0:
            raise ValueError(f"{APP_OPTIONS[name].name}: {values[name]:g} must be positive")
    try:
        ttl_s = parse_duration(values["results_ttl"])
    except ValueError as exc:
        raise ValueError(f"{APP_OPTIONS['results_ttl'].name}: {exc}") from None
    settings = AppSettings(checkpoint=values["checkpoint"], dtype=values["dtype"], device=values["device"],
                           max_upload_mb=values["max_upload_mb"], max_frames=values["max_frames"],
                           max_res=values["max_res"], ttl_s=ttl_s, sample=find_sample())
    serve_page(settings, values["host"], port)


def serve_page(settings: AppSettings, host: str, port: int) -> None:
    """Load the model, build the page, serve until Ctrl-C or SIGTERM; then remove every file."""
    import importlib.util

    from rollingdepth.runtime.run_config import RunConfig

    if importlib.util.find_spec("gradio") is None:
        raise ImportError("gradio is not installed", name="gradio")

    # the model's settings as run-video's: an unknown dtype is one line here, not a traceback
    model = RunConfig.build("fast", {"checkpoint": settings.checkpoint, "dtype": settings.dtype,
                                     "device": settings.device})
    if settings.device is not None:
        from rollingdepth.method.device import resolve_device

        try:
            resolve_device(settings.device)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None
    workspace = Workspace(settings.ttl_s)
    # Gradio keeps uploads and served files in its temporary folder: make that the app's root.
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.root)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workspace.root / "examples")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    service = page = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        from rollingdepth.runtime.jobs import load_model

        print(f"rollingdepth-app: loading {settings.checkpoint}", file=sys.stderr, flush=True)
        pipe = load_model(model)  # run-video's and eval-depth's loader
        service = DepthService(pipe, settings, workspace)
        page = build_page(service)
        page.queue(default_concurrency_limit=1)
        workspace.start_sweeper()
        try:
            page.launch(server_name=host, server_port=port, max_file_size=int(settings.max_upload_mb * 2**20),
                        ssr_mode=False, mcp_server=False, show_error=False, theme=_theme(), quiet=True,
                        footer_links=[], prevent_thread_lock=True)
        except OSError as exc:
            raise InputError(f"{APP_OPTIONS['port'].name}: cannot listen on {host}:{port} ({' '.join(str(exc).split())})") from None
        print(f"rollingdepth-app: serving on {page.local_url or f'http://{host}:{port}/'} (Ctrl-C stops it)",
              file=sys.stderr, flush=True)
        while page.is_running:  # until Ctrl-C or SIGTERM (a KeyboardInterrupt)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if page is not None:
            page.close(verbose=False)  # nothing when it never started
        if service is not None:
            service.shutdown()
            print(f"rollingdepth-app: stopped; removed {workspace.root}", file=sys.stderr, flush=True)
        else:
            workspace.close()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``rollingdepth-app``: errors in one line, exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli(args=args, prog_name="rollingdepth-app", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except ValueError as exc:  # InputError too
        print(f"Error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "gradio":  # by the module it names, not by its text
            print('Error: the web page needs Gradio: pip install "rollingdepth[app]" (or pip install ".[app]")',
                  file=sys.stderr)
            sys.exit(EXIT_USAGE)
        raise
    except Exception as exc:
        usage = usage_error(exc)
        if usage is None:
            raise
        print(f"Error: {usage[0]}", file=sys.stderr)
        sys.exit(usage[1])
    sys.exit(0)


if __name__ == "__main__":
    main()
