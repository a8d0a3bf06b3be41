"""Shared pieces of the benchmark scripts: models built locally, clips, peak memory."""

from __future__ import annotations

import json
import platform
import resource
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "fixtures" / "tiny-rollingdepth"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def random_pipeline(layout: str = "sd2", dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """A RollingDepthPipeline with random weights, built here (no download).

    ``sd2``: the real checkpoint's UNet (SD2 layout, 8 input channels) and VAE (downscale 8),
    a 1-layer text encoder of width 1024. ``small``: the same structure with small channel
    counts (VAE downscale still 8), for memory benchmarks on long clips; ``micro``: smaller
still, so that long clips at 768 x 432 run on a CPU.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from rollingdepth import RollingDepthPipeline

    torch.manual_seed(seed)
    if layout == "sd2":
        unet_channels, vae_channels, heads, layers, text_dim = (320, 640, 1280, 1280), (128, 256, 512, 512), [5, 10, 20, 20], 2, 1024
    elif layout == "small":
        unet_channels, vae_channels, heads, layers, text_dim = (32, 64, 64, 64), (32, 32, 32, 32), [2, 4, 4, 4], 1, 64
    elif layout == "micro":
        unet_channels, vae_channels, heads, layers, text_dim = (16, 16, 16, 16), (4, 4, 4, 4), [2, 2, 2, 2], 1, 64
    else:
        raise ValueError(f"layout: {layout!r}")
    down = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    if layout == "micro":  # cross-frame attention only at the coarsest attention level (and the mid block)
        down = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
        up = ("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    unet = UNet2DConditionModel(
        sample_size=96, in_channels=8, out_channels=4, layers_per_block=layers,
        block_out_channels=unet_channels, down_block_types=down, up_block_types=up,
        cross_attention_dim=text_dim, attention_head_dim=heads, use_linear_projection=True,
        norm_num_groups={"sd2": 32, "small": 16}.get(layout, 8),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=layers,
        block_out_channels=vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups={"sd2": 32, "small": 16}.get(layout, 4),
        mid_block_add_attention=layout != "micro",
    )
    text = CLIPTextModel(CLIPTextConfig(hidden_size=text_dim, num_hidden_layers=1, num_attention_heads=8,
                                        intermediate_size=64, vocab_size=1000, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    tokenizer = CLIPTokenizer.from_pretrained(TINY / "tokenizer")
    scheduler = DDIMScheduler.from_pretrained(TINY / "scheduler")
    pipe = RollingDepthPipeline(unet=unet, vae=vae, scheduler=scheduler, text_encoder=text, tokenizer=tokenizer)
    return pipe.to(device=device, dtype=dtype)


def load_pipeline(checkpoint: str | None, layout: str, dtype: torch.dtype, device: str):
    if checkpoint:
        from rollingdepth import RollingDepthPipeline

        return RollingDepthPipeline.from_pretrained(checkpoint, dtype=dtype).to(device)
    return random_pipeline(layout, dtype, device)


def synthetic_clip(frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ray-cast scene (RGB uint8 [N, H, W, 3], exact depth [N, H, W])."""
    from make_synthetic_scene import render

    return render(frames, height, width)


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def reset_peak_rss() -> bool:
    """Start a new high-water mark of the resident set (Linux: ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb(field: str = "VmRSS") -> float:
    """The resident set now (``VmRSS``) or its high-water mark (``VmHWM``), Linux only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {platform.processor() or ''} ({torch.get_num_threads()} threads), {gpu}, torch {torch.__version__}".replace("  ", " ")


def write_reports(out_dir: Path, name: str, data: dict, header: list[str], rows: list[list]) -> None:
    """``{name}.json`` and ``{name}.md`` (a Markdown table) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    (out_dir / f"{name}.md").write_text(f"{data.get('title', name)}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
