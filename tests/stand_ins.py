"""A stand-in for the model whose snippets are known: affine copies of one depth video.

Frame ``f`` of the input is the uniform gray ``ID_OFFSET + ID_STEP * f`` (up to 49 frames; a
longer video carries ``f // 49`` in green over blue, :func:`frames_with_ids`). The VAE's encoder
passes that identity through the latent; the UNet reads, from the latents of a snippet, which
frames it shows (first frame and dilation) and writes into each frame's depth latent the frame,
and that snippet's scale ``a`` and shift ``b``; the decoder turns them into ``a * D[f] + b``,
``D`` a smooth depth video (:func:`depth_video`). The scheduler takes the model output as the
clean sample (``prediction_type="sample"``, one step to alpha 1), so its step returns the UNet's
output as it is. With ``snippet_error`` each snippet also gets its own smooth error (a pattern
whose phase is a fixed function of the snippet's frames, like its scale and shift: snippets
disagree, and the same snippet in another unit gives the same output, as the method's one
shared initial noise makes real snippets do), that fraction of the depth's spread; ``flat_frames`` ``[a, b]``
makes those frames of ``D`` featureless (a fade, fog). :func:`save_stand_in_checkpoint` writes all of it as a checkpoint folder that
``RollingDepthPipeline.from_pretrained`` and ``run-video -c`` load like any other, in a
process that imported this module (diffusers loads classes only from imported modules).

``STAND_IN_HOLD_AT_DECODE`` (environment, for the process that loads the stand-in): once that
many frames went through the decoder, the next decoder call waits until the process is killed,
so that a test can stop a run at a known point of the merge (decoded again) without a race.
``STAND_IN_FAIL_ON_RANK``: the decoder of the torchrun rank of that number (``RANK``) raises.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import ConfigMixin, DDIMScheduler, ModelMixin  # noqa: F401 (ConfigMixin, ModelMixin: found by diffusers' loader)
from diffusers.configuration_utils import register_to_config

ID_OFFSET, ID_STEP = 10, 5  # frame f: uniform gray 10 + 5 f (up to 49 frames)
LATENT_SCALE = 0.18215  # RollingDepthPipeline's latent scale factors
HOLD_ENV = "STAND_IN_HOLD_AT_DECODE"
FAIL_ENV = "STAND_IN_FAIL_ON_RANK"


ID_BASE = (255 - ID_OFFSET) // ID_STEP + 1  # 49 frames in gray; more with the green channel


def frames_with_ids(num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 ``[N, H, W, 3]``: frame f uniformly ``ID_OFFSET + ID_STEP * f`` (gray) for up to 49
    frames; for more, red ``ID_OFFSET + ID_STEP * (f % 49)``, blue ``ID_OFFSET`` and green
    ``ID_OFFSET + ID_STEP * (f // 49)`` (the encoder reads ``f // 49`` as green minus blue)."""
    f = np.arange(num_frames)
    if num_frames <= ID_BASE:
        values = np.stack([ID_OFFSET + ID_STEP * f] * 3, axis=1)  # [N, 3]
    elif num_frames <= ID_BASE * ID_BASE:
        values = np.stack([ID_OFFSET + ID_STEP * (f % ID_BASE), ID_OFFSET + ID_STEP * (f // ID_BASE),
                           np.full(num_frames, ID_OFFSET)], axis=1)
    else:
        raise ValueError(f"num_frames: at most {ID_BASE * ID_BASE} frames carry an identity")
    return np.broadcast_to(values[:, None, None, :], (num_frames, height, width, 3)).astype(np.uint8)


def save_frames_with_ids(folder: Path, num_frames: int, height: int, width: int) -> Path:
    """:func:`frames_with_ids` as a new folder of PNGs (lossless: each frame keeps its identity)."""
    import cv2

    folder = Path(folder)
    folder.mkdir()
    for i, frame in enumerate(frames_with_ids(num_frames, height, width)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.ascontiguousarray(frame[..., ::-1]))  # OpenCV writes BGR
    return folder


def depth_video(frame_ids: torch.Tensor, height: int, width: int, flat_frames=None) -> torch.Tensor:
    """The depth video ``D`` at frames ``frame_ids [B]``: float32 ``[B, H, W]``, in [0.45, 2.55]: a
    moving pattern over a trend that rises over the first 49 frames, then falls and rises again
    with a period of 96 frames, so that a long video stays in that range (``flat_frames``
    ``[a, b]``: frames a .. b - 1 without the pattern)."""
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    f = frame_ids.to(torch.float32)[:, None, None]
    pattern = 0.5 * torch.sin(xx / 4.0 + 0.4 * f) * torch.cos(yy / 5.0)
    if flat_frames is not None:
        pattern = pattern * ((f < flat_frames[0]) | (f >= flat_frames[1])).to(torch.float32)
    trend = 48.0 - torch.abs(torch.remainder(f, 96.0) - 48.0)  # f up to frame 48, then down and up again
    return 1.0 + pattern + 0.025 * trend


def snippet_error(phase: torch.Tensor, frame_ids: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A snippet's own smooth error at its frames: float32 ``[B, H, W]`` of standard deviation about
    0.25 (the depth pattern's), ``phase [B, 2]`` the snippet's (:func:`snippet_phase`)."""
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    p, f = phase.to(torch.float32), frame_ids.to(torch.float32)[:, None, None]
    return 0.5 * torch.sin(xx / 6.0 + 3.0 * p[:, 0, None, None] + 0.05 * f) * torch.cos(yy / 7.0 + 3.0 * p[:, 1, None, None])


def snippet_affine(start: torch.Tensor, dilation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale in [1.5, 4] and shift in [-1, 1] of the snippet starting at ``start`` with ``dilation``
    (both ``[S]``): a fixed pseudo-random function, float32."""
    key = start.to(torch.float64) * 0.7548776662 + dilation.to(torch.float64) * 0.5698402910
    u1, u2 = torch.frac(key * 7.0), torch.frac(key * 13.0 + 0.37)
    return (1.5 + 2.5 * u1).to(torch.float32), (2.0 * u2 - 1.0).to(torch.float32)


def snippet_phase(start: torch.Tensor, dilation: torch.Tensor) -> torch.Tensor:
    """The phase ``[S, 2]`` of the error of the snippets starting at ``start`` with ``dilation``
    (both ``[S]``), in [-1, 1]: a fixed pseudo-random function, float32."""
    key = start.to(torch.float64) * 0.4142135623 + dilation.to(torch.float64) * 0.7320508075
    return torch.stack([torch.frac(key * 11.0), torch.frac(key * 17.0 + 0.51)], dim=1).to(torch.float32) * 2.0 - 1.0


def expected_snippets(num_frames: int, plan: list[tuple[int, int]], size: tuple[int, int]) -> list[np.ndarray]:
    """The snippets the stand-in produces: per ``(dilation, n)`` float32 ``[S, n, H, W]``."""
    from rollingdepth.method.snippets import snippet_indices

    out = []
    for d, n in plan:
        idx = torch.from_numpy(snippet_indices(num_frames, n, d))  # [S, n]
        a, b = snippet_affine(idx[:, 0], idx[:, 1] - idx[:, 0] if n > 1 else torch.zeros(len(idx)))
        video = depth_video(idx.reshape(-1), *size).reshape(*idx.shape, *size)
        out.append((a[:, None, None, None] * video + b[:, None, None, None]).numpy())
    return out


def _frame_id(latent: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` whose channel 0 holds frame ids (scaled by ``LATENT_SCALE``) -> int64 ``[B]``."""
    return torch.round(latent[:, 0].float().mean(dim=(-2, -1)) / LATENT_SCALE).long()


class _Placeholder(torch.nn.Module):
    """A parameter, so that the stand-ins save and load weights like any model."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))


class _IdentityEncoder(torch.nn.Module):
    """``[B, 3, H, W]`` gray frames in [-1, 1] -> moments ``[B, 8, H/2, W/2]``: channel 0 of the
    mean is the frame id (the log-variance half is zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x.float().mean(dim=(-2, -1)) + 1.0) / 2.0 * 255.0  # [B, 3]
        ids = torch.round((rgb[:, 0] - ID_OFFSET) / ID_STEP) + ID_BASE * torch.round((rgb[:, 1] - rgb[:, 2]) / ID_STEP)
        out = torch.zeros(x.shape[0], 8, x.shape[-2] // 2, x.shape[-1] // 2, dtype=x.dtype, device=x.device)
        out[:, 0] = ids[:, None, None].to(x.dtype)
        return out


class _DepthDecoder(torch.nn.Module):
    """Depth latents (already divided by the scale factor) ``[B, 4, h, w]`` holding frame id,
    scale and shift in channels 0-2 -> ``[B, 3, 2h, 2w]``, each channel ``a * D[f] + b``."""

    def __init__(self, error: float = 0.0, flat_frames=None):
        super().__init__()
        self.decoded = 0  # frames decoded in this process
        self.error, self.flat_frames = error, flat_frames

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if os.environ.get(FAIL_ENV) is not None and os.environ.get(FAIL_ENV) == os.environ.get("RANK"):
            raise RuntimeError(f"the stand-in fails on rank {os.environ['RANK']}")
        hold = os.environ.get(HOLD_ENV)
        if hold and self.decoded >= int(hold):
            while True:  # held here until the test kills the process
                time.sleep(0.1)
        self.decoded += z.shape[0]
        ids = torch.round(z[:, 0].float().mean(dim=(-2, -1))).long()
        a, b = z[:, 1, 0, 0].float(), z[:, 2, 0, 0].float()
        size = (2 * z.shape[-2], 2 * z.shape[-1])
        clean = depth_video(ids, *size, self.flat_frames)
        if self.error:
            clean = clean + self.error * snippet_error(z[:, 3, 0, :2].float(), ids, *size)
        depth = a[:, None, None] * clean + b[:, None, None]
        return depth[:, None].expand(-1, 3, -1, -1).to(z.dtype)


class StandInVAE(ModelMixin, ConfigMixin):
    """The parts of ``AutoencoderKL`` the pipeline calls (``encoder``, ``quant_conv``,
    ``post_quant_conv``, ``decoder``), downscaling 2x like the tiny checkpoint."""

    @register_to_config
    def __init__(self, block_out_channels: tuple = (1, 1), snippet_error: float = 0.0, flat_frames: list | None = None):
        super().__init__()
        self.encoder = _IdentityEncoder()
        self.quant_conv = torch.nn.Identity()
        self.post_quant_conv = torch.nn.Identity()
        self.decoder = _DepthDecoder(snippet_error, flat_frames)
        self.placeholder = _Placeholder()


class StandInUNet(ModelMixin, ConfigMixin):
    """Called like the pipeline calls ``UNet2DConditionModel`` on ``[B*n, 8, h, w]`` (RGB latents,
    then depth latents); returns the clean depth latents ``[B*n, 4, h, w]``: per frame its id,
    its snippet's scale and its snippet's shift (channels 0-2, times the latent scale), and in
    channel 3 the phase of its snippet's error (:func:`snippet_phase`)."""

    @register_to_config
    def __init__(self, block_out_channels: tuple = (1, 1)):
        super().__init__()
        self.placeholder = _Placeholder()

    @property
    def attn_processors(self) -> dict:
        return {}  # no attention layers for the cross-frame processor

    def set_attn_processor(self, processors) -> None:
        pass

    def forward(self, sample, timestep, encoder_hidden_states=None, cross_attention_kwargs=None,
                return_dict=True):
        n = int(cross_attention_kwargs["num_view"])
        ids = _frame_id(sample[:, :4]).reshape(-1, n)  # [B, n]
        dilation = ids[:, 1] - ids[:, 0] if n > 1 else torch.zeros_like(ids[:, 0])
        a, b = snippet_affine(ids[:, 0].cpu(), dilation.cpu())  # [B]
        out = torch.zeros(sample.shape[0], 4, *sample.shape[-2:], dtype=torch.float32)
        out[:, 0] = ids.reshape(-1, 1, 1).float()
        out[:, 1] = a.repeat_interleave(n)[:, None, None]
        out[:, 2] = b.repeat_interleave(n)[:, None, None]
        out[:, 3, 0, :2] = snippet_phase(ids[:, 0].cpu(), dilation.cpu()).repeat_interleave(n, dim=0)
        return ((out * LATENT_SCALE).to(device=sample.device, dtype=sample.dtype),)


def save_stand_in_checkpoint(folder: Path, tiny_checkpoint: Path, snippet_error: float = 0.0,
                             flat_frames: list | None = None) -> Path:
    """A checkpoint folder: the stand-in UNet and VAE (with each snippet's own error and featureless
    frames, see the module's text), a one-step scheduler whose step returns the UNet's output,
    and the tiny checkpoint's text encoder and tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    StandInUNet().save_pretrained(folder / "unet")
    StandInVAE(snippet_error=snippet_error, flat_frames=flat_frames).save_pretrained(folder / "vae")
    DDIMScheduler(prediction_type="sample", set_alpha_to_one=True, timestep_spacing="trailing",
                  clip_sample=False).save_pretrained(folder / "scheduler")
    for part in ("text_encoder", "tokenizer"):
        shutil.copytree(Path(tiny_checkpoint) / part, folder / part, dirs_exist_ok=True)
    index = json.loads((Path(tiny_checkpoint) / "model_index.json").read_text())
    index["unet"] = [__name__, "StandInUNet"]
    index["vae"] = [__name__, "StandInVAE"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
