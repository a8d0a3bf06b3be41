"""Run settings: a validated dataclass built from a preset YAML plus explicit overrides.

Each field is declared once, with its command-line option (:class:`~rollingdepth.option_spec.Option`:
spellings, help, metavar); :func:`option_name` spells any of them for a message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rollingdepth.io.output_formats import output_format, output_formats
from rollingdepth.method.settings import DEFAULT_CHECKPOINT, MethodSettings, method_fields
from rollingdepth.option_spec import Affects, ListForm, Option, affecting, opt, options_of, parse_floats, parse_numbers

__all__ = ["DEFAULT_CHECKPOINT", "PRESET", "PRESETS", "PRESET_DIR", "RunConfig", "load_preset", "option_name",
           "parse_numbers", "prediction_settings", "resume_compared", "run_options", "skip_existing_compared"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("fast", "fast1024", "full", "paper", "none")
RENAMED = {"frame_count": "max_frames"}  # settings' former names, still read from preset YAML files
SHOT_MODES = ("auto", "none")  # or a cut list file
MIN_SEGMENT_FRAMES = 8  # a segment shares a quarter of itself with the next
PREDICTION, COMPUTATION, OUTPUT, RUNS = (Affects.PREDICTION, Affects.COMPUTATION, Affects.OUTPUT,
                                        Affects.RUN)  # what each setting affects

PRESET = Option(("-p", "--preset"), "fast, fast1024, full, paper, none, or a YAML file; options given here win. "
                "(default: fast)", "NAME|YAML")


def _on_off(flags: tuple[str, ...], help: str, affects: Affects) -> Option:
    return Option(flags, help, None, bool, show_default=False, affects=affects)


def _output(name: str):
    """The setting of an output format, declared with the format (``rollingdepth.io.output_formats``)."""
    fmt = output_format(name)
    option = fmt.option
    if fmt.needs_depth:
        option = dataclasses.replace(option, help=f"{option.help}; needs --depth-out depth.")
    return opt(list(fmt.default) if isinstance(fmt.default, tuple) else fmt.default, option)


def _more(name: str, field: str):
    """A further setting of an output format, declared with the format."""
    return opt(*output_format(name).more_option(field))


@dataclass
class RunConfig(MethodSettings):
    """Everything one ``run-video`` call needs: the method's settings (declared and checked
    in :class:`MethodSettings`) and the run's own, each declared with its option."""

    checkpoint: str = opt(DEFAULT_CHECKPOINT, Option(
        ("-c", "--checkpoint"), f"Hub id or local folder. (default: {DEFAULT_CHECKPOINT})", "ID|PATH",
        affects=PREDICTION))
    dtype: str = opt("fp16", Option(
        ("--dtype", "--data-type"), "fp16, bf16 or fp32 (on a CPU, fp16 runs in bf16 where the CPU computes it natively, else in fp32).", "fp16|bf16|fp32",
        affects=PREDICTION, planned=True))
    device: str | None = opt(None, Option(
        ("--device",), "cuda, cuda:1, mps or cpu. (default: best available)", "NAME",
        affects=COMPUTATION))
    seed: int = opt(0, Option(
        ("--seed",), "Seed of the initial noise. (default: 0)", "INT", int, affects=PREDICTION))
    start_frame: int = opt(0, Option(
        ("--from", "--start-frame"), "Skip this many frames first.", "INT", int, affects=PREDICTION))
    max_frames: int = opt(0, Option(  # at most this many frames (0 = to the end)
        ("--frames", "--frame-count"), "Process at most this many frames (0 = to the end).", "INT", int,
        affects=PREDICTION))
    output_fps: float = opt(0.0, Option(
        ("--fps", "--output-fps"), "Frame rate of output videos (0 = the input's).", "FPS", float,
        affects=OUTPUT))
    restore_res: bool = opt(False, _on_off(
        ("--restore-res/--no-restore-res", "--restore-resolution"),
        "Outputs at the input's size (also --restore-res true|false).", OUTPUT))
    cmaps: list[str] = _output("colour")
    save_npy: bool = _output("npy")
    save_sbs: bool = _output("sbs")
    audio: bool = opt(True, _on_off(
        ("--audio/--no-audio",), "The source's sound in the colour, side-by-side and stereo videos, cut to the frames "
        "processed (copied where MP4 holds it, else AAC; none with --fps). (default: on)", OUTPUT))
    save_snippets: bool = _output("snippets")
    save_png16: bool = _output("png16")
    save_exr: bool = _output("exr")
    save_tiff: bool = _output("tiff16")
    save_depth_video: bool = _output("depth_video")
    save_stereo: list[str] = _output("stereo")
    stereo_strength: float = _more("stereo", "stereo_strength")
    convergence: float = _more("stereo", "convergence")
    depth_out: str = opt("inverse", Option(  # inverse: the prediction as is; depth: mapped onto depth_range
        ("--depth-out",), "What npy, EXR, PNG16 and PLY hold: inverse = the prediction (affine-invariant inverse "
        "depth, near = large); depth = mapped onto --depth-range, one mapping for the whole video. "
        "(default: inverse)", "inverse|depth", affects=OUTPUT))
    depth_range: list[float] | None = opt(None, Option(  # [NEAR, FAR] in the user's units
        ("--depth-range",), "With --depth-out depth: the depth of the nearest and farthest point of the video, in "
        "your units (e.g. 0.5,20).", "NEAR,FAR", list, parse_floats,
        affects=OUTPUT, list_form=ListForm.NUMBERS))
    depth_points: str | None = opt(None, Option(
        ("--depth-points",), "Known distances: a CSV of frame, x, y, depth (input pixels, any unit). Each shot's "
        "inverse depth is fitted to them and npy, EXR, PNG16 and PLY hold depth in that unit; shots without two "
        "points use --depth-range (docs/outputs.md).", "FILE", affects=OUTPUT))
    save_ply: int = _output("ply")  # a point cloud every this many frames (0 = none)
    fov: float | None = _more("ply", "fov")
    focal: float | None = _more("ply", "focal")
    ply_stride: int = _more("ply", "ply_stride")
    compile: bool = opt(False, _on_off(
        ("--compile/--no-compile",), "torch.compile the UNet and VAE (slow start, faster on long runs). "
        "(default: off)", RUNS))
    channels_last: bool = opt(False, _on_off(
        ("--channels-last/--no-channels-last",), "Channels-last memory format for the UNet and VAE. (default: off)",
        RUNS))
    tf32: bool = opt(True, _on_off(
        ("--tf32/--no-tf32",), "TF32 matmuls on Ampere and newer GPUs. (default: on)", RUNS))
    work_dir: str | None = opt(None, Option(
        ("--work-dir",), "Where a run keeps its intermediate results (decoded snippets: about 4 MB per frame at "
        "768x432 in fp16), e.g. a fast local disk. (default: the output folder)", "DIR", affects=RUNS))
    resume: bool = opt(True, _on_off(
        ("--resume/--restart",), "Continue an unfinished run of the same video and settings from its work folder, "
        "or discard that folder and start over. (default: resume)", RUNS))
    shots: str = opt("none", Option(
        ("--shots",), "auto: find hard cuts and process each shot on its own; none: the video is one shot; or a cut "
        "list FILE (frame numbers or timecodes, one per line, or a CMX3600 EDL; docs/shots.md). "
        "(default: auto; none in the paper preset)", "auto|none|FILE", affects=PREDICTION))
    segment_frames: int = opt(1000, Option(
        ("--segment-frames",), "Process a shot longer than this in overlapping segments of at most this many frames, "
        "aligned on their overlap: host memory then depends on this, not on the video's length (0 = never split). "
        "(default: 1000)", "K", int, affects=PREDICTION))
    strict: bool = opt(False, _on_off(
        ("--strict/--no-strict",), "Fail a video whose file decodes fewer frames than its container declares "
        "(truncated); without it, a warning gives both numbers. (default: off)", RUNS))

    def method_settings(self) -> MethodSettings:
        """The method's settings, validated, with command-line names in any error."""
        options = method_fields()
        values = {name: getattr(self, name) for name in options}
        return MethodSettings(**values).validate(name=lambda f: options[f])

    def check(self) -> "RunConfig":
        """Raise ``ValueError`` naming the option for any value that cannot work.

        (Not ``validate``: that is :meth:`MethodSettings.validate`, which a ``RunConfig`` keeps,
        so that ``RollingDepthPipeline.check_inputs`` takes a ``RunConfig`` too.)"""
        from rollingdepth.method.device import DTYPES  # torch: not needed for --help

        def non_negative_int(option: str, value) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{option}: {value!r} is not a non-negative integer")

        self.method_settings()
        non_negative_int("--from", self.start_frame)
        non_negative_int("--frames", self.max_frames)
        non_negative_int("--seed", self.seed)
        non_negative_int(option_name("segment_frames"), self.segment_frames)
        if 0 < self.segment_frames < MIN_SEGMENT_FRAMES:
            raise ValueError(f"{option_name('segment_frames')}: {self.segment_frames} is too short; give 0 (never split) "
                             f"or at least {MIN_SEGMENT_FRAMES} frames")
        if self.shots not in SHOT_MODES and not Path(str(self.shots)).expanduser().is_file():
            raise ValueError(f"{option_name('shots')}: {self.shots!r} is neither auto, none nor a cut list file")
        if str(self.dtype).lower() not in DTYPES:
            raise ValueError(f"--dtype: unknown value {self.dtype!r}; expected fp16, bf16 or fp32")
        if isinstance(self.output_fps, bool) or not isinstance(self.output_fps, (int, float)) or self.output_fps < 0:
            raise ValueError(f"--fps: {self.output_fps!r} must be >= 0 (0 = the input's)")
        self._validate_exports()
        self._validate_outputs()
        return self

    def _validate_exports(self) -> None:
        """The depth mapping and the point clouds' camera."""
        import math

        from rollingdepth.io.exports import DEPTH_OUT_MODES

        def number(value) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

        if self.depth_out not in DEPTH_OUT_MODES:
            raise ValueError(f"--depth-out: unknown value {self.depth_out!r}; expected inverse or depth")
        if self.depth_range is not None:
            pair = list(self.depth_range) if isinstance(self.depth_range, (list, tuple)) else [self.depth_range]
            if len(pair) != 2 or not all(number(v) for v in pair) or not 0 < pair[0] < pair[1]:
                raise ValueError(f"--depth-range: expected NEAR,FAR with 0 < NEAR < FAR, got {self.depth_range!r}")
            self.depth_range = [float(v) for v in pair]
            if self.depth_out != "depth" and not self.depth_points:
                raise ValueError("--depth-range: applies to --depth-out depth; add --depth-out depth")
        elif self.depth_out == "depth" and not self.depth_points:
            raise ValueError("--depth-out depth: needs --depth-range NEAR,FAR (the scene's nearest and farthest "
                             "depth in your units, e.g. 0.5,20 for metres)")
        if self.depth_points:
            from rollingdepth.io.depth_points import read_depth_points

            read_depth_points(Path(self.depth_points).expanduser())  # one line naming the file and line
            self.depth_out = "depth"  # known distances: the outputs hold depth in their unit

    def _validate_outputs(self) -> None:
        """Each output format's setting, what it needs (depth) and the libraries it needs."""
        for fmt in output_formats():
            if fmt.setting is None:  # always written
                continue
            fmt.check(self)
            if not fmt.enabled(self):
                continue
            if fmt.needs_depth and self.depth_out != "depth":
                raise ValueError(f"{fmt.option.name}: {fmt.what} need depth, not inverse depth: add --depth-out depth "
                                 "--depth-range NEAR,FAR")
            fmt.available(fmt.option.name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def build(cls, preset: str | Path | None, overrides: dict[str, Any]) -> "RunConfig":
        """Defaults, then the preset (name or YAML path), then overrides that are not None."""
        values = load_preset(preset or "fast")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).check()


def load_preset(preset: str | Path) -> dict[str, Any]:
    """The settings of a named preset or of a YAML file (unknown keys are an error)."""
    text = str(preset)
    if text in PRESETS:
        path = PRESET_DIR / f"{text}.yaml"
    else:
        path = Path(text).expanduser()
        if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
            raise ValueError(f"--preset: {text!r} is neither one of {', '.join(PRESETS)} nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--preset: {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--preset: {path} must hold a mapping of settings")
    for old, new in RENAMED.items():  # a YAML written before a setting was renamed
        if old in data and new not in data:
            data[new] = data.pop(old)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--preset: {path} has unknown settings {unknown}; known: {sorted(known)}")
    for key in (name for name, option in options_of(RunConfig).items() if option.list_form):  # one value: a list
        if key in data and data[key] is not None and not isinstance(data[key], list) and data[key] != "auto":
            data[key] = [data[key]]
    return data


def run_options() -> dict[str, Option]:
    """Field name -> its option, for every run setting (the method's included), and ``preset``."""
    return {**options_of(RunConfig), "preset": PRESET}


def option_name(name: str, off: bool = False) -> str:
    """The command-line spelling of a setting: ``option_name("processing_res") -> "--res"``;
    ``off``: the off form of an on/off option (``option_name("resume", off=True) -> "--restart"``)."""
    option = run_options()[name]
    return option.off if off and option.off else option.name


# ----------------------------------------------------------------------------- what compares which setting
def prediction_settings() -> tuple[str, ...]:
    """The settings that change the prediction (eval-depth does not reuse predictions made with others)."""
    return affecting(RunConfig, Affects.PREDICTION)


def resume_compared() -> tuple[str, ...]:
    """The settings a resume's journal compares (its fingerprint): the prediction's and how it is computed."""
    return affecting(RunConfig, Affects.PREDICTION, Affects.COMPUTATION)


def skip_existing_compared(planned: bool, settings: RunConfig | None = None) -> tuple[str, ...]:
    """The recorded settings ``--skip-existing`` compares: those that change the prediction or what
    the outputs hold; ``planned``: those compared as the run uses them (else as given). With
    ``settings`` (the new run's), less the settings of the output formats it turns off (a format's
    further settings, and its own where it says what a written file holds: ``--save-ply EVERY``):
    they change no file that run keeps."""
    compared = affecting(RunConfig, Affects.PREDICTION, Affects.OUTPUT, planned=planned)
    if settings is None:
        return compared
    idle = {name for f in output_formats() if f.setting and not f.enabled(settings)
            for name in (f.setting, *(m[0] for m in f.more))}
    return tuple(name for name in compared if name not in idle)
