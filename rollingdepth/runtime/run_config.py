"""Run settings: a validated dataclass built from a preset YAML plus explicit overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rollingdepth.method.device import DTYPES
from rollingdepth.method.settings import MethodSettings, method_fields

__all__ = ["PRESETS", "PRESET_DIR", "RunConfig", "load_preset", "parse_numbers"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("fast", "fast1024", "full", "paper", "none")
DEFAULT_CHECKPOINT = "prs-eth/rollingdepth-v1-0"


def parse_numbers(values, option: str, kind: type = int) -> list | None:
    """A list option as typed: ``"1,10 25"`` or ``["1,10", "25"]`` (repeated options) ->
    ``[1, 10, 25]`` of ``kind`` (int or float); ``None`` when nothing was given."""
    if not values:
        return None
    texts = [values] if isinstance(values, str) else values
    out = []
    for part in ",".join(str(v) for v in texts).replace(" ", ",").split(","):
        if part:
            try:
                out.append(kind(part))
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{option}: {part!r} is not {what}") from None
    return out


@dataclass
class RunConfig(MethodSettings):
    """Everything one ``run-video`` call needs: the method's settings (declared and checked
    in :class:`MethodSettings`) and the run's own; see ``run-video --help`` for each field."""

    checkpoint: str = DEFAULT_CHECKPOINT
    dtype: str = "fp16"
    device: str | None = None
    seed: int = 0
    start_frame: int = 0
    frame_count: int = 0
    output_fps: float = 0.0
    restore_res: bool = False
    cmaps: list[str] = field(default_factory=lambda: ["Spectral_r", "Greys_r"])
    save_npy: bool = True
    save_sbs: bool = True
    save_snippets: bool = False
    save_png16: bool = False
    save_exr: bool = False  # {stem}_exr/000000.exr ..., float32 Z channel (needs the [exr] extra)
    depth_out: str = "inverse"  # inverse: the prediction as is; depth: mapped onto depth_range
    depth_range: list[float] | None = None  # [NEAR, FAR] in the user's units, for depth_out "depth"
    save_ply: int = 0  # a point cloud every this many frames (0 = none); needs depth_out "depth"
    fov: float | None = None  # horizontal field of view in degrees of the point clouds' camera (default 60)
    focal: float | None = None  # or its focal length in pixels of the input video
    ply_stride: int = 2  # one point every this many pixels, in rows and columns
    compile: bool = False  # torch.compile the UNet and the VAE
    channels_last: bool = False
    tf32: bool = True  # TF32 matmuls and convolutions on Ampere and newer
    work_dir: str | None = None  # where the work folder goes (default: the output folder)
    resume: bool = True  # continue an unfinished run from its work folder (else discard it first)
    strict: bool = False  # a truncated video (fewer frames than its container declares) is an error

    def method_settings(self) -> MethodSettings:
        """The method's settings, validated, with command-line names in any error."""
        options = method_fields()
        values = {name: getattr(self, name) for name in options}
        return MethodSettings(**values).validate(name=lambda f: options[f])

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` naming the option for any value that cannot work."""
        from rollingdepth.io.visualize import check_cmap

        def non_negative_int(option: str, value) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{option}: {value!r} is not a non-negative integer")

        self.method_settings()
        non_negative_int("--from", self.start_frame)
        non_negative_int("--frames", self.frame_count)
        non_negative_int("--seed", self.seed)
        if str(self.dtype).lower() not in DTYPES:
            raise ValueError(f"--dtype: unknown value {self.dtype!r}; expected fp16, bf16 or fp32")
        if isinstance(self.output_fps, bool) or not isinstance(self.output_fps, (int, float)) or self.output_fps < 0:
            raise ValueError(f"--fps: {self.output_fps!r} must be >= 0 (0 = the input's)")
        if not self.cmaps:
            raise ValueError("--cmap: give at least one colour map")
        for name in self.cmaps:
            try:
                check_cmap(name)
            except ValueError as exc:
                raise ValueError(f"--{exc}") from None
        self._validate_exports()
        return self

    def _validate_exports(self) -> None:
        """The depth mapping, EXR and point-cloud settings."""
        import math

        from rollingdepth.io.exports import DEPTH_OUT_MODES, check_openexr

        def number(value) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

        if self.depth_out not in DEPTH_OUT_MODES:
            raise ValueError(f"--depth-out: unknown value {self.depth_out!r}; expected inverse or depth")
        if self.depth_range is not None:
            pair = list(self.depth_range) if isinstance(self.depth_range, (list, tuple)) else [self.depth_range]
            if len(pair) != 2 or not all(number(v) for v in pair) or not 0 < pair[0] < pair[1]:
                raise ValueError(f"--depth-range: expected NEAR,FAR with 0 < NEAR < FAR, got {self.depth_range!r}")
            self.depth_range = [float(v) for v in pair]
            if self.depth_out != "depth":
                raise ValueError("--depth-range: applies to --depth-out depth; add --depth-out depth")
        elif self.depth_out == "depth":
            raise ValueError("--depth-out depth: needs --depth-range NEAR,FAR (the scene's nearest and farthest "
                             "depth in your units, e.g. 0.5,20 for metres)")
        if isinstance(self.save_ply, bool) or not isinstance(self.save_ply, int) or self.save_ply < 0:
            raise ValueError(f"--save-ply: {self.save_ply!r} is not a non-negative integer (every how many frames)")
        if self.save_ply and self.depth_out != "depth":
            raise ValueError("--save-ply: point clouds need depth, not inverse depth: add --depth-out depth "
                             "--depth-range NEAR,FAR")
        if self.fov is not None and (not number(self.fov) or not 0 < self.fov < 180):
            raise ValueError(f"--fov: {self.fov!r} must be between 0 and 180 degrees")
        if self.focal is not None and (not number(self.focal) or self.focal <= 0):
            raise ValueError(f"--focal: {self.focal!r} must be > 0 (pixels of the input video)")
        if self.fov is not None and self.focal is not None:
            raise ValueError("--focal: give --fov or --focal, not both")
        if isinstance(self.ply_stride, bool) or not isinstance(self.ply_stride, int) or self.ply_stride < 1:
            raise ValueError(f"--ply-stride: {self.ply_stride!r} must be an integer >= 1")
        if self.save_exr:
            check_openexr("--save-exr")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def build(cls, preset: str | Path | None, overrides: dict[str, Any]) -> "RunConfig":
        """Defaults, then the preset (name or YAML path), then overrides that are not None."""
        values = load_preset(preset or "fast")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validate()


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
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--preset: {path} has unknown settings {unknown}; known: {sorted(known)}")
    for key in ("dilations", "snippet_lengths", "cmaps"):
        if key in data and not isinstance(data[key], list) and data[key] != "auto":
            data[key] = [data[key]]
    return data
