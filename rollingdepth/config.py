"""Run settings: a validated dataclass built from a preset YAML plus explicit overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .coalign import COALIGN_MODES
from .device import DTYPES
from .snippets import MAX_SNIPPET_LEN

__all__ = ["PRESETS", "PRESET_DIR", "RunConfig", "load_preset"]

PRESET_DIR = Path(__file__).parent / "configs"
PRESETS = ("fast", "fast1024", "full", "paper", "none")
DEFAULT_CHECKPOINT = "prs-eth/rollingdepth-v1-0"


@dataclass
class RunConfig:
    """Everything one ``run-video`` call needs; see ``run-video --help`` for each field."""

    checkpoint: str = DEFAULT_CHECKPOINT
    processing_res: int = 768
    dilations: list[int] = field(default_factory=lambda: [1, 25])
    snippet_lengths: list[int] | str = field(default_factory=lambda: [3])  # or "auto"
    cap_dilation: bool = True
    refine_step: int = 0
    refine_snippet_len: int = 3
    refine_start_dilation: int = 6
    dtype: str = "fp16"
    device: str | None = None
    seed: int = 0
    max_vae_bs: int = 4
    unet_batch_size: int | None = None
    coalign: str = "fast"
    start_frame: int = 0
    frame_count: int = 0
    output_fps: float = 0.0
    restore_res: bool = False
    cmaps: list[str] = field(default_factory=lambda: ["Spectral_r", "Greys_r"])
    save_npy: bool = True
    save_sbs: bool = True
    save_snippets: bool = False
    save_png16: bool = False
    attn_span: dict | None = None  # experimental: {"fine": 2, ...}
    compile: bool = False  # torch.compile the UNet and the VAE
    channels_last: bool = False
    tf32: bool = True  # TF32 matmuls and convolutions on Ampere and newer

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` naming the option for any value that cannot work."""
        from .visualize import check_cmap

        def positive_ints(name, values, low=1, high=None):
            if not values:
                raise ValueError(f"--{name}: give at least one value")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
                    bound = f"between {low} and {high}" if high is not None else f">= {low}"
                    raise ValueError(f"--{name}: {v!r} is not an integer {bound}")

        positive_ints("dilations", self.dilations)
        if 1 not in self.dilations:
            raise ValueError(f"--dilations: must include 1, got {self.dilations}")
        if self.snippet_lengths != "auto":
            if isinstance(self.snippet_lengths, str):
                raise ValueError(f"--snippet-lengths: {self.snippet_lengths!r} is neither integers nor 'auto'")
            positive_ints("snippet-lengths", self.snippet_lengths, 1, MAX_SNIPPET_LEN)
        if self.snippet_lengths != "auto" and len(self.snippet_lengths) not in (1, len(self.dilations)):
            raise ValueError(
                f"--snippet-lengths: give one value or one per dilation ({len(self.dilations)}), got {self.snippet_lengths}"
            )
        positive_ints("refine-snippet-len", [self.refine_snippet_len], 1, MAX_SNIPPET_LEN)
        positive_ints("refine-start-dilation", [self.refine_start_dilation])
        positive_ints("refine-step", [self.refine_step], 0, 500)
        positive_ints("processing-resolution", [self.processing_res], 0)
        positive_ints("max-vae-bs", [self.max_vae_bs])
        if self.unet_batch_size is not None:
            positive_ints("unet-batch-size", [self.unet_batch_size])
        positive_ints("from", [self.start_frame], 0)
        positive_ints("frames", [self.frame_count], 0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"--seed: {self.seed!r} is not a non-negative integer")
        if str(self.dtype).lower() not in DTYPES:
            raise ValueError(f"--dtype: unknown value {self.dtype!r}; expected fp16, bf16 or fp32")
        if self.coalign not in COALIGN_MODES:
            raise ValueError(f"--coalign: unknown mode {self.coalign!r}; expected fast or reference")
        if not isinstance(self.output_fps, (int, float)) or self.output_fps < 0:
            raise ValueError(f"--fps: {self.output_fps!r} must be >= 0 (0 = the input's)")
        if self.attn_span is not None:
            from .cross_frame_attention import ATTENTION_LEVELS

            if not isinstance(self.attn_span, dict) or not set(self.attn_span) <= set(ATTENTION_LEVELS):
                raise ValueError(f"--num-view-per-level: levels are {', '.join(ATTENTION_LEVELS)}, got {self.attn_span}")
            positive_ints("num-view-per-level", list(self.attn_span.values()), 1, MAX_SNIPPET_LEN)
        if not self.cmaps:
            raise ValueError("--cmap: give at least one colour map")
        for name in self.cmaps:
            try:
                check_cmap(name)
            except ValueError as exc:
                raise ValueError(f"--{exc}") from None
        return self

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`RollingDepthPipeline.__call__` (generator aside)."""
        return dict(
            processing_res=self.processing_res,
            dilations=list(self.dilations),
            cap_dilation=self.cap_dilation,
            snippet_lengths=self.snippet_lengths if self.snippet_lengths == "auto" else list(self.snippet_lengths),
            refine_step=self.refine_step,
            refine_snippet_len=self.refine_snippet_len,
            refine_start_dilation=self.refine_start_dilation,
            coalign=self.coalign,
            max_vae_bs=self.max_vae_bs,
            unet_batch_size=self.unet_batch_size,
            attn_span=self.attn_span,
        )

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
