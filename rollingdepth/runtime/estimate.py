"""How long a run will take, said before it starts.

The work of a run is known from its plan: frames through the VAE encoder and decoder,
snippets through the UNet. Each unit's FLOPs at the processing size are counted with
``torch.utils.flop_counter.FlopCounterMode`` on copies of the models on the meta device (no
arithmetic is done, so counting at 768 x 432 takes a moment, on any machine). The device's
throughput for each unit (FLOP/s) is measured once by running the real models on a small
input, and kept per device, dtype and model in the user's cache folder. Time = FLOPs over
throughput, summed; co-alignment, the merge and writing are left out (a few percent).

The cache corrects itself: after each video, the seconds its model stages took (encoding,
the UNet, decoding, refinement: ``timings``) are compared with what the cached throughput
says the work it did (``counts``) would take; a run :data:`CORRECT_FACTOR` times faster or
slower than that (a calibration measured while the machine was busy, or since freed) scales
the throughput cached for its units by the ratio (:func:`correct_throughput`), so the next
estimate is the run's. Runs whose model stages took under :data:`CORRECT_MIN_S` (warm-up
dominates) correct nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rollingdepth.method.settings import MethodSettings
from rollingdepth.runtime.plan import Plan
from rollingdepth.runtime.run_config import option_name

if TYPE_CHECKING:
    from rollingdepth.runtime.model_steps import WorkCounts
    from rollingdepth.method.pipeline import RollingDepthModel

__all__ = ["Estimate", "correct_throughput", "dtype_name", "estimate_run", "format_duration", "quick_res",
           "unit_flops"]

CALIBRATION_LATENT = (18, 32)  # latent size (h, w) of the frames the throughput is measured on
QUICK_RES = (768, 640, 512, 384, 320, 256, 192, 160, 128, 96, 80, 64, 48, 32)  # resolutions to suggest, highest first
QUICK_S = 90.0  # a quick first look takes at most this long (about a minute)
LONG_S = 300.0  # an estimate over this (on a CPU) names the resolution of a quick first look
CORRECT_FACTOR = 2.0  # a run this many times faster or slower than estimated corrects the cached throughput
CORRECT_MIN_S = 5.0  # ... when its model stages took at least this long


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "rollingdepth" / "throughput.json"


def _configs(pipe: "RollingDepthModel") -> tuple[str, str]:
    """The UNet's and the VAE's configs as JSON: what their FLOPs and throughput depend on."""
    unet, vae = (json.dumps(dict(model.config), sort_keys=True, default=str) for model in (pipe.unet, pipe.vae))
    return unet, vae


def _model_key(pipe: "RollingDepthModel") -> str:
    return hashlib.sha1("\n".join(_configs(pipe)).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=4)
def _meta_models(unet_config: str, vae_config: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from rollingdepth.method.cross_frame_attention import set_cross_frame_attention

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads(unet_config))
        vae = AutoencoderKL.from_config(json.loads(vae_config))
    set_cross_frame_attention(unet)
    return unet, vae


def _count(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=64)
def _unit_flops(unet_config: str, vae_config: str, size: tuple[int, int], snippet_len: int) -> tuple[int, int, int]:
    unet, vae = _meta_models(unet_config, vae_config)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    h, w = -(-size[0] // f), -(-size[1] // f)  # padded to the VAE factor, as the pipeline does
    image = torch.empty(1, 3, h * f, w * f, device="meta")
    latent = torch.empty(1, vae.config.latent_channels, h, w, device="meta")
    encode = _count(lambda: vae.quant_conv(vae.encoder(image)))
    decode = _count(lambda: vae.decoder(vae.post_quant_conv(latent)))
    text = torch.empty(1, 2, unet.config.cross_attention_dim, device="meta")
    sample = torch.empty(snippet_len, unet.config.in_channels, h, w, device="meta")
    unet_flops = _count(lambda: unet(sample, torch.full((snippet_len,), 999, device="meta"), encoder_hidden_states=text,
                                     cross_attention_kwargs={"num_view": snippet_len}))
    return encode, decode, unet_flops


def unit_flops(pipe: "RollingDepthModel", size: tuple[int, int], snippet_len: int) -> dict[str, int]:
    """FLOPs of one frame through the VAE encoder and decoder, and of one snippet of ``n``
    frames through the UNet, at processing size ``size`` (H, W)."""
    encode, decode, unet = _unit_flops(*_configs(pipe), tuple(size), int(snippet_len))
    return {"encode": encode, "decode": decode, f"unet{snippet_len}": unet}


def calibration_size(pipe: "RollingDepthModel", size: tuple[int, int]) -> tuple[int, int]:
    """The run's size when its latents are small, else :data:`CALIBRATION_LATENT` (in pixels)."""
    f = pipe.vae_scale_factor
    if -(-size[0] // f) * -(-size[1] // f) <= CALIBRATION_LATENT[0] * CALIBRATION_LATENT[1]:
        return tuple(size)
    return CALIBRATION_LATENT[0] * f, CALIBRATION_LATENT[1] * f


def _measure(pipe: "RollingDepthModel", size: tuple[int, int], snippet_len: int, unet_batch: int,
             vae_batch: int) -> dict[str, float]:
    """FLOP/s of each unit on this device, from real runs at ``size`` with the run's batch
    sizes (after a warm-up)."""
    flops = unit_flops(pipe, size, snippet_len)
    device = pipe.unet.device
    frames = torch.zeros((max(vae_batch, unet_batch * snippet_len), *size, 3), dtype=torch.uint8)
    t = pipe.timesteps(1)[0]

    def timed(fn) -> float:
        fn()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    with torch.no_grad():
        latents = pipe.encode_frames(frames, size)  # [B, 4, h, w]
        z, snippets = latents[:vae_batch], latents[: unet_batch * snippet_len]
        seconds = {
            "encode": timed(lambda: pipe.encode_frames(frames[:vae_batch], size)) / vae_batch,
            "decode": timed(lambda: pipe.decode_depth(z, size)) / vae_batch,
            f"unet{snippet_len}": timed(lambda: pipe.denoise_snippets(snippets, snippets, t, snippet_len)) / unet_batch,
        }
    return {k: flops[k] / max(seconds[k], 1e-9) for k in seconds}


def _cache_key(pipe: "RollingDepthModel", size: tuple[int, int], snippet_len: int, unet_batch: int,
               vae_batch: int) -> tuple[str, tuple[int, int]]:
    """``(the cache's key for this device, dtype, model, batch sizes and (small) size, that size)``."""
    device = pipe.unet.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} x{torch.get_num_threads()}"
    size = calibration_size(pipe, size)
    return f"{name}|{str(pipe.dtype)}|{_model_key(pipe)}|n{snippet_len}|{size[0]}x{size[1]}|b{unet_batch},{vae_batch}", size


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_cache(cached: dict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # no cache folder: measured again next time


def throughput(pipe: "RollingDepthModel", size: tuple[int, int], snippet_len: int, unet_batch: int,
               vae_batch: int) -> dict[str, float]:
    """FLOP/s per unit for this device, dtype, model, batch sizes and (small) size: from the
    cache, or measured and cached."""
    key, size = _cache_key(pipe, size, snippet_len, unet_batch, vae_batch)
    cached = _read_cache()
    if key not in cached:
        cached[key] = _measure(pipe, size, snippet_len, unet_batch, vae_batch)
        _write_cache(cached)
    return cached[key]


def _batch_sizes(pipe: "RollingDepthModel", size: tuple[int, int], settings: MethodSettings,
                 snippet_len: int) -> tuple[int, int]:
    """``(snippets per UNet call, frames per VAE call)`` of a run's snippets of ``snippet_len`` frames."""
    latent_hw = (-(-size[0] // pipe.vae_scale_factor), -(-size[1] // pipe.vae_scale_factor))
    unet_batch = settings.unet_batch_size or pipe.default_unet_batch_size(snippet_len, latent_hw)
    return unet_batch, settings.max_vae_bs


def correct_throughput(pipe: "RollingDepthModel", size: tuple[int, int], settings: MethodSettings,
                       counts: WorkCounts, timings: dict, snippet_lengths: list[int] | None = None) -> float | None:
    """After a run at processing size ``size``: when its model stages (``timings``: encode,
    snippets, decode, refine) took :data:`CORRECT_FACTOR` times less or more than the cached
    throughput says the work it did (``counts``: VAE encodes and decodes, UNet frames, in
    snippets of ``snippet_lengths``) takes, scale the throughput cached for the units the
    estimate of such a run looks up by that ratio (estimated / measured seconds) and return
    it; else None (also for runs under :data:`CORRECT_MIN_S`)."""
    measured = sum(float(timings.get(stage, 0.0)) for stage in ("encode", "snippets", "decode", "refine"))
    if measured < CORRECT_MIN_S:
        return None
    lengths = sorted(set(snippet_lengths or [3]))
    entries = {}  # snippet length -> (cache key, the rates used)
    for n in sorted({3, *lengths}):  # encode / decode are looked up with snippets of 3 (Estimate._work)
        batches = _batch_sizes(pipe, size, settings, n)
        entries[n] = (_cache_key(pipe, size, n, *batches)[0], throughput(pipe, size, n, *batches))
    flops = {n: unit_flops(pipe, size, n) for n in entries}
    three = entries[3][1]
    estimated = (counts.vae_encodes * flops[3]["encode"] / three["encode"]
                 + counts.vae_decodes * flops[3]["decode"] / three["decode"])
    per_frame = [flops[n][f"unet{n}"] / entries[n][1][f"unet{n}"] / n for n in lengths]  # seconds per UNet frame
    estimated += counts.unet_frames * sum(per_frame) / len(per_frame)
    ratio = estimated / measured
    if estimated <= 0 or 1 / CORRECT_FACTOR <= ratio <= CORRECT_FACTOR:
        return None
    cached = _read_cache()
    for key, rates in entries.values():
        cached[key] = {unit: rate * ratio for unit, rate in rates.items()}
    _write_cache(cached)
    return ratio


class Estimate:
    """Seconds and FLOPs of one video's run (``seconds``, ``flops``), and the same at another
    resolution for advice (:meth:`at_res`)."""

    def __init__(self, pipe: "RollingDepthModel", num_frames: int, input_size: tuple[int, int],
                 settings: MethodSettings):
        self.pipe, self.num_frames, self.input_size, self.settings = pipe, num_frames, input_size, settings
        self.size = pipe.processing_size(*input_size, settings.processing_res)
        self.flops, self.seconds = self._work(self.size)

    def _work(self, size) -> tuple[float, float]:
        s = self.settings
        work = Plan.build(s, self.num_frames, snippet_len=3 if s.auto_num_view else None).work()
        flops = seconds = 0.0
        for unit, count in work.items():
            snippet_len = int(unit[4:]) if unit.startswith("unet") else 3
            per_unit = unit_flops(self.pipe, size, snippet_len)[unit]
            rate = throughput(self.pipe, size, snippet_len, *_batch_sizes(self.pipe, size, s, snippet_len))[unit]
            flops += count * per_unit
            seconds += count * per_unit / rate
        return flops, seconds

    def at_res(self, res: int) -> float:
        """Seconds of the same run at processing resolution ``res``."""
        return self._work(self.pipe.processing_size(*self.input_size, res))[1]


def estimate_run(pipe: "RollingDepthModel", videos: list[tuple[int, tuple[int, int]]],
                 settings: MethodSettings) -> tuple[str, float]:
    """One line for the user before a run of ``videos`` ((frame count, (H, W)) each) and the
    estimated seconds; on a CPU it names a lower ``--res`` and what it would take."""
    estimates = [Estimate(pipe, frames, size, settings) for frames, size in videos if frames > 0]
    if not estimates:
        return "", 0.0
    seconds = sum(e.seconds for e in estimates)
    frames = sum(e.num_frames for e in estimates)
    h, w = max(e.size for e in estimates)
    device = pipe.unet.device.type
    dtype = dtype_name(pipe.dtype)
    what = f"{frames} frames at {w}x{h}" if len(estimates) == 1 else f"{len(estimates)} videos, {frames} frames, up to {w}x{h}"
    line = f"Estimated {format_duration(seconds)} on {device} ({dtype}) for {what}"
    lower = max(settings.processing_res // 2, 256)
    if device == "cpu" and settings.processing_res > lower:
        other = sum(e.at_res(lower) for e in estimates)
        line += f"; {option_name('processing_res')} {lower} would take about {format_duration(other)}"
    if device == "cpu" and seconds > LONG_S:
        quick = quick_res(estimates, settings.processing_res or max(max(e.input_size) for e in estimates))
        if quick is not None and quick[0] < lower:
            line += (f"; for a quick first look, {option_name('processing_res')} {quick[0]} "
                     f"takes about {format_duration(quick[1])}")
    return line + ".", seconds


def quick_res(estimates: list[Estimate], below: int, budget_s: float = QUICK_S) -> tuple[int, float] | None:
    """The highest resolution of :data:`QUICK_RES` under ``below`` (0: any) at which the runs of
    ``estimates`` together take at most ``budget_s`` seconds, and their seconds there; else the
    lowest one tried; None when there is none below."""
    found = None
    for res in QUICK_RES:
        if below and res >= below:
            continue
        found = res, sum(e.at_res(res) for e in estimates)
        if found[1] <= budget_s:
            break
    return found


def dtype_name(dtype: torch.dtype) -> str:
    """fp32, fp16, bf16: the spelling of ``--dtype``."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype).removeprefix("torch."))


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{max(seconds, 1)} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
