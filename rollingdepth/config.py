"""Run settings: a validated dataclass built from a preset YAML plus explicit overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .device import DTYPES
from .settings import MethodSettings, method_fields

__all__ = ["PRESETS", "PRESET_DIR", "RunConfig", "load_preset"]

PRESET_DIR = Path(__file__).parent / "configs"
PRESETS = ("fast", "fast1024", "full", "paper", "none")
DEFAULT_CHECKPOINT = "prs-eth/rollingdepth-v1-0"


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
    compile: bool = False  # torch.compile the UNet and the VAE
    channels_last: bool = False
    tf32: bool = True  # TF32 matmuls and convolutions on Ampere and newer
    work_dir: str | None = None  # where the work folder goes (default: the output folder)
    resume: bool = True  # continue an unfinished run from its work folder (else discard it first)

    def method_settings(self) -> MethodSettings:
        """The method's settings, validated, with command-line names in any error."""
        options = method_fields()
        values = {name: getattr(self, name) for name in options}
        return MethodSettings(**values).validate(name=lambda f: options[f])

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` naming the option for any value that cannot work."""
        from .visualize import check_cmap

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
        return self

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
