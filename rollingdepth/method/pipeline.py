"""RollingDepthModel: the model of RollingDepth and the method's steps on batches.

:class:`RollingDepthModel` (a diffusers ``DiffusionPipeline``) holds the UNet, the VAE, the
scheduler and the text encoder, and the method's steps on batches (:meth:`encode_frames`,
:meth:`denoise_snippets`, :meth:`decode_depth`, :meth:`encode_depth`, and the scheduler's
:meth:`timesteps` and :meth:`add_noise`), with no state of any run. The passes over a whole
video are in :mod:`rollingdepth.runtime.passes`; the public
:class:`~rollingdepth.runtime.pipeline.RollingDepthPipeline` adds ``__call__`` (the passes
over an in-memory store) to this class, and run-video runs them over a work folder on disk
(``docs/architecture.md``). No file I/O here.
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from rollingdepth.method.cross_frame_attention import set_cross_frame_attention
from rollingdepth.method.device import cpu_dtype_for, resolve_device, resolve_dtype, to_device
from rollingdepth.method.settings import MethodSettings

__all__ = ["RollingDepthModel"]

# diffusers renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns).
_DIFFUSERS_TAKES_DTYPE = hasattr(importlib.import_module("diffusers.pipelines.pipeline_utils"), "_resolve_dtype")


@contextlib.contextmanager
def _quiet_loading():
    """Silence diffusers' and transformers' progress bars and info logs while loading."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    d_level, t_level = dlog.get_verbosity(), tlog.get_verbosity()
    d_bars, t_bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(d_level)
        tlog.set_verbosity(t_level)
        if d_bars:
            dlog.enable_progress_bar()
        if t_bars:
            tlog.enable_progress_bar()


class RollingDepthModel(DiffusionPipeline):
    """RollingDepth's model on stock diffusers, and the method's steps on batches.

    Loads like any diffusers pipeline (``from_pretrained`` a Hub id or a local folder); the
    cross-frame attention processor is installed on the UNet at construction. To predict a
    video, use its subclass :class:`~rollingdepth.runtime.pipeline.RollingDepthPipeline`
    (``rollingdepth.RollingDepthPipeline``), which is this model with ``__call__``.
    """

    rgb_latent_scale_factor = 0.18215
    depth_latent_scale_factor = 0.18215
    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: DDIMScheduler,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
    ):
        super().__init__()
        self.register_modules(
            unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer
        )
        set_cross_frame_attention(self.unet)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._empty_text_embed: torch.Tensor | None = None  # a function of the weights, cached

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loading (Hub id or folder), without its progress bars and info logs.

        Takes ``torch_dtype`` or ``dtype`` and passes whichever the installed diffusers uses.
        """
        torch_dtype = kwargs.pop("torch_dtype", None)
        dtype = kwargs.pop("dtype", None) or torch_dtype
        if dtype is not None:
            kwargs["dtype" if _DIFFUSERS_TAKES_DTYPE else "torch_dtype"] = dtype
        with _quiet_loading():
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def load(
        cls,
        checkpoint: str,
        dtype: str | torch.dtype = "fp16",
        device: str | torch.device | None = None,
        **kwargs,
    ) -> "RollingDepthModel":
        """Load (an instance of this class) and move to ``device`` (CUDA, then MPS, then CPU when ``None``).

        fp16 on CPU runs in bf16 where the CPU computes it natively, else in fp32 (one warning).
        """
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        pipe = cls.from_pretrained(checkpoint, dtype=torch_dtype, **kwargs)
        return pipe.to(dev)

    # ------------------------------------------------------------------ checks
    def check_inputs(self, frames, settings: MethodSettings) -> MethodSettings:
        """Validate the frames and every setting; return the settings normalised
        (:meth:`MethodSettings.validate`)."""
        if not isinstance(frames, (np.ndarray, torch.Tensor)):
            raise ValueError(f"frames: expected a numpy array or torch tensor, got {type(frames).__name__}")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 RGB [N, H, W, 3], got shape {tuple(frames.shape)}")
        if frames.dtype not in (np.uint8, torch.uint8):
            raise ValueError(f"frames: expected dtype uint8, got {frames.dtype}")
        if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
            raise ValueError(f"frames: empty input of shape {tuple(frames.shape)}")
        return settings.validate(max_refine_step=self.scheduler.config.num_train_timesteps // 2)

    def prepare(self) -> None:
        """Before a run: fp16 on CPU becomes bf16 or fp32 (one warning;
        :func:`~rollingdepth.method.device.cpu_dtype_for`)."""
        if self.unet.device.type == "cpu" and self.dtype == torch.float16:
            self.to(dtype=cpu_dtype_for(torch.float16, stacklevel=3))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def processing_size(height: int, width: int, processing_res: int) -> tuple[int, int]:
        """Longer edge to ``processing_res`` exactly, the shorter one floored (aspect kept); 0 keeps
        the size. The reference computes both through a float factor, whose rounding made 1919 x
        1079 at 64 come out 63 wide; integer arithmetic gives the same sizes otherwise."""
        if processing_res == 0:
            return height, width
        if width >= height:
            return max(1, height * processing_res // width), processing_res
        return processing_res, max(1, width * processing_res // height)

    @staticmethod
    def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Antialiased bilinear resize of float ``[B, C, H, W]`` (no-op at the same size)."""
        if tuple(frames.shape[-2:]) == tuple(size):
            return frames
        return F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)

    @staticmethod
    def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Bilinear resize of float32 ``[N, H, W]`` to ``size`` (to restore the input size)."""
        if tuple(depth.shape[-2:]) == tuple(size):
            return depth
        t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[:, None]  # [N, 1, H, W]
        return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``[B, C, H, W]`` right/bottom (edge values) to a multiple of the VAE factor."""
        f = self.vae_scale_factor
        ph, pw = (-x.shape[-2]) % f, (-x.shape[-1]) % f
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (0, pw, 0, ph), mode="replicate")

    # ------------------------------------------------------------------ steps
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """VAE-encode ``[B, 3, H, W]`` in [-1, 1]: mean of the moments times 0.18215."""
        x = self._pad(images).to(device=self.vae.device, dtype=self.vae.dtype)
        moments = self.vae.quant_conv(self.vae.encoder(x))
        mean, _ = torch.chunk(moments, 2, dim=1)
        return mean * self.rgb_latent_scale_factor  # [B, 4, h, w]

    def encode_frames(self, frames, size: tuple[int, int]) -> torch.Tensor:
        """uint8 RGB ``[B, H, W, 3]`` (NumPy or torch) -> latents ``[B, 4, h, w]``: resized to
        ``size``, normalised to [-1, 1], encoded."""
        frames = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        x = to_device(frames, self.vae.device).permute(0, 3, 1, 2).float()  # [B, 3, H, W], 0..255
        x = self.resize_frames(x, size)
        x = x.div_(255.0).mul_(2.0).sub_(1.0)  # in place (x is a fresh float copy): x / 255 * 2 - 1
        return self.encode(x.to(self.vae.dtype))

    def encode_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """Depth ``[B, H, W]`` in [-1, 1] -> latents ``[B, 4, h, w]``, encoded like RGB (3 equal channels)."""
        return self.encode(depth[:, None].expand(-1, 3, -1, -1).to(self.vae.dtype))

    def decode_depth(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Depth latents ``[B, 4, h, w]`` -> depth ``[B, H, W]`` (``size``): the mean of the
        decoder's 3 channels, cropped."""
        z = self.vae.post_quant_conv(latents / self.depth_latent_scale_factor)
        image = self.vae.decoder(z)  # [B, 3, H', W']
        return image.mean(dim=1)[:, : size[0], : size[1]]

    def empty_text_embedding(self) -> torch.Tensor:
        """Embedding of the empty prompt (BOS, EOS: no padding), ``[1, 2, C]``; cached."""
        emb = self._empty_text_embed
        if emb is None or emb.device != self.unet.device or emb.dtype != self.unet.dtype:
            tokens = self.tokenizer(
                "",
                padding="do_not_pad",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            ids = tokens.input_ids.to(self.text_encoder.device)
            emb = self.text_encoder(ids)[0].to(device=self.unet.device, dtype=self.unet.dtype)
            self._empty_text_embed = emb
        return emb

    def default_unet_batch_size(self, snippet_len: int, latent_hw: tuple[int, int]) -> int:
        """Snippets per UNet call: 1 to 16, from free accelerator memory (4 on CPU/MPS)."""
        device = self.unet.device
        if device.type != "cuda":
            return 4
        free, _ = torch.cuda.mem_get_info(device)
        # Rough activation cost of one frame through the SD2 UNet with SDPA: ~60 kB per latent
        # token at 2 bytes per value; keep half of the free memory as headroom.
        bytes_per_value = torch.finfo(self.unet.dtype).bits // 8
        per_frame = latent_hw[0] * latent_hw[1] * 30_000 * bytes_per_value
        return int(max(1, min(16, (free // 2) // max(1, per_frame * snippet_len))))

    def denoise_snippets(
        self,
        rgb_latents: torch.Tensor,  # [B*n, 4, h, w]
        depth_latents: torch.Tensor,  # [B*n, 4, h, w]
        timestep: torch.Tensor,
        num_view: int,
        attn_span: dict | None = None,
    ) -> torch.Tensor:
        """One denoising step of B snippets of n frames (``num_view = n``): the UNet on the RGB
        and depth latents with cross-frame attention, then the scheduler's step;
        ``[B*n, 4, h, w]``. ``timestep`` lives on the host (the step then never syncs);
        ``attn_span``: the experimental per-level attention span."""
        unet_input = torch.cat([rgb_latents, depth_latents], dim=1)  # [B*n, 8, h, w]
        attention_kwargs = {"num_view": num_view}
        if attn_span:
            attention_kwargs["attn_span"] = attn_span
        model_output = self.unet(
            unet_input,
            timestep.to(unet_input.device, non_blocking=True).expand(unet_input.shape[0]),
            encoder_hidden_states=self.empty_text_embedding(),
            cross_attention_kwargs=attention_kwargs,
            return_dict=False,
        )[0]
        return self.scheduler.step(model_output, timestep, depth_latents).prev_sample

    def timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """The scheduler's timesteps for ``num_inference_steps`` steps, on the host."""
        self.scheduler.set_timesteps(num_inference_steps)
        return self.scheduler.timesteps

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """``latents`` noised to ``timestep`` with ``noise`` (the scheduler's forward process)."""
        return self.scheduler.add_noise(latents, noise, timestep)

    def initial_noise(self, shape, generator: torch.Generator | None) -> torch.Tensor:
        """The one initial noise, ``torch.randn`` as the reference draws it; a generator on
        another device is honoured."""
        device, dtype = self.unet.device, self.unet.dtype
        if generator is not None and generator.device.type != device.type:
            return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
