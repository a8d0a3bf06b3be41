"""The model's steps as one run uses them: work counted, the attention span applied, and
batches split when the accelerator runs out of memory.

The model (:class:`~rollingdepth.method.pipeline.RollingDepthModel`) holds the weights and
the method's steps on batches, with no state of any run; :class:`ModelSteps` holds a run's
state. A run types the model as a :class:`DepthModel`: the steps it needs of it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Protocol

import torch

from rollingdepth.method.device import is_out_of_memory

__all__ = ["DepthModel", "ModelSteps", "WorkCounts"]


class DepthModel(Protocol):
    """What a run needs of the model: ``RollingDepthModel``'s steps on batches."""

    unet: torch.nn.Module
    dtype: torch.dtype
    vae_scale_factor: int  # pixels per latent row and column

    def prepare(self) -> None: ...
    def processing_size(self, height: int, width: int, processing_res: int) -> tuple[int, int]: ...
    def encode_frames(self, frames, size: tuple[int, int]) -> torch.Tensor: ...
    def encode_depth(self, depth: torch.Tensor) -> torch.Tensor: ...
    def decode_depth(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor: ...
    def denoise_snippets(self, rgb_latents: torch.Tensor, depth_latents: torch.Tensor, timestep: torch.Tensor,
                         num_view: int, attn_span: dict | None = None) -> torch.Tensor: ...
    def default_unet_batch_size(self, snippet_len: int, latent_hw: tuple[int, int]) -> int: ...
    def empty_text_embedding(self) -> torch.Tensor: ...
    def timesteps(self, num_inference_steps: int) -> torch.Tensor: ...
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor: ...
    def initial_noise(self, shape, generator: torch.Generator | None) -> torch.Tensor: ...


@dataclass
class WorkCounts:
    """Work a run did: frames through the VAE encoder and decoder, UNet calls and the frames
    they held. A second decode of a snippet frame would show in ``vae_decodes``."""

    vae_encodes: int = 0
    vae_decodes: int = 0
    unet_calls: int = 0
    unet_frames: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def __add__(self, other: WorkCounts) -> WorkCounts:
        """The work of two runs together (a video's units)."""
        return WorkCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def _free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelSteps:
    """``pipe``'s steps for one run, with that run's state: :attr:`counts`, the attention span
    (``attn_span``, experimental) and the out-of-memory back-off (fewer snippets per UNet
    call, smaller VAE batches; said once)."""

    def __init__(self, pipe: DepthModel, attn_span: dict | None = None):
        self.pipe = pipe
        self.attn_span = dict(attn_span) if attn_span else None
        self.counts = WorkCounts()
        self.snippet_cap: int | None = None  # snippets per UNet call, lowered after an out-of-memory error
        self._warned_oom = False

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    def _warn_oom(self, message: str) -> None:
        if not self._warned_oom:
            warnings.warn(message, stacklevel=3)
            self._warned_oom = True

    # ------------------------------------------------------------------ VAE
    def encode_frames(self, frames, size: tuple[int, int]) -> torch.Tensor:
        """uint8 RGB ``[B, H, W, 3]`` -> latents ``[B, 4, h, w]``."""
        latents = self.pipe.encode_frames(frames, size)
        self.counts.vae_encodes += int(latents.shape[0])
        return latents

    def encode_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """Depth ``[B, H, W]`` in [-1, 1] -> latents ``[B, 4, h, w]``."""
        latents = self.pipe.encode_depth(depth)
        self.counts.vae_encodes += int(latents.shape[0])
        return latents

    def decode_depth(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Depth latents ``[B, 4, h, w]`` -> depth ``[B, H, W]``; split in halves on
        out-of-memory (down to one frame). Only decodes that succeed are counted."""
        try:
            maps = self.pipe.decode_depth(latents, size)
        except Exception as exc:
            if not is_out_of_memory(exc) or latents.shape[0] <= 1:
                raise
            _free_cached_memory()
            self._warn_oom("out of memory in the VAE: decoding in smaller batches")
            half = latents.shape[0] // 2
            return torch.cat([self.decode_depth(latents[:half], size), self.decode_depth(latents[half:], size)])
        self.counts.vae_decodes += int(latents.shape[0])
        return maps

    # ------------------------------------------------------------------ UNet
    def denoise_snippets(self, rgb_latents: torch.Tensor, depth_latents: torch.Tensor, timestep: torch.Tensor,
                         snippet_len: int) -> torch.Tensor:
        """One denoising step of B snippets of ``snippet_len`` frames, ``[B*n, 4, h, w]`` in and out.

        On out-of-memory, fewer snippets per call: the cap is halved (said once) down to 1
        snippet, then the error goes up.
        """
        snippets = rgb_latents.shape[0] // snippet_len
        cap = self.snippet_cap or snippets
        while True:
            try:
                parts = []
                for i in range(0, snippets, cap):
                    rows = slice(i * snippet_len, (i + cap) * snippet_len)
                    parts.append(self._unet(rgb_latents[rows], depth_latents[rows], timestep, snippet_len))
                return parts[0] if len(parts) == 1 else torch.cat(parts)
            except Exception as exc:
                if not is_out_of_memory(exc) or min(cap, snippets) <= 1:
                    raise
                cap = self.snippet_cap = max(1, min(cap, snippets) // 2)
                _free_cached_memory()
                self._warn_oom(f"out of memory in the UNet: {cap} snippets per call from now on")

    def _unet(self, rgb_latents, depth_latents, timestep, snippet_len: int) -> torch.Tensor:
        out = self.pipe.denoise_snippets(rgb_latents, depth_latents, timestep, snippet_len, attn_span=self.attn_span)
        self.counts.unet_calls += 1
        self.counts.unet_frames += int(rgb_latents.shape[0])
        return out

    def default_unet_batch_size(self, snippet_len: int, latent_hw: tuple[int, int]) -> int:
        return self.pipe.default_unet_batch_size(snippet_len, latent_hw)

    # ------------------------------------------------------------------ scheduler and noise
    def timesteps(self, num_inference_steps: int) -> torch.Tensor:
        return self.pipe.timesteps(num_inference_steps)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.pipe.add_noise(latents, noise, timestep)

    def initial_noise(self, shape, generator: torch.Generator | None) -> torch.Tensor:
        return self.pipe.initial_noise(shape, generator)
