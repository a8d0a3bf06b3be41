"""RollingDepthPipeline: video depth from snippets of frames, co-aligned, optionally refined.

Follows the reference inference step by step (``docs/method.md``). The pipeline takes
frames in memory and returns arrays: it does no file I/O.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from transformers import CLIPTextModel, CLIPTokenizer

from .coalign import COALIGN_MODES
from .coalign import coalign as coalign_snippets
from .cross_frame_attention import ATTENTION_LEVELS, set_cross_frame_attention
from .device import is_out_of_memory, resolve_device, resolve_dtype, to_device
from .num_view import choose_num_view
from .snippets import MAX_SNIPPET_LEN, plan_snippets, refine_dilations, snippet_indices

__all__ = ["RollingDepthOutput", "RollingDepthPipeline"]

logger = logging.getLogger(__name__)

# Called as callback(stage, done, total) while a stage runs.
ProgressCallback = Callable[[str, int, int], None]

# diffusers renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns).
_DIFFUSERS_TAKES_DTYPE = hasattr(importlib.import_module("diffusers.pipelines.pipeline_utils"), "_resolve_dtype")


@dataclass
class RollingDepthOutput(BaseOutput):
    """What :class:`RollingDepthPipeline` returns; ``H, W`` are the processing size.

    Attributes:
        depth: float32 ``[N, H, W]``, the prediction (affine-invariant inverse depth).
        depth_coaligned: float32 ``[N, H, W]``, after co-alignment and re-normalisation.
        snippets: one float32 ``[S, n, H, W]`` per dilation actually used.
        coalign_loss: the co-alignment loss at the final scales and shifts.
        settings: the values actually used (dilations after capping, snippet lengths, ...).
        timings: seconds per stage.
    """

    depth: np.ndarray
    depth_coaligned: np.ndarray
    snippets: list
    coalign_loss: float
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


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


def _as_list(value, name: str) -> list[int]:
    if isinstance(value, (int, np.integer)):
        value = [value]
    try:
        values = [v for v in value]
    except TypeError:
        raise ValueError(f"{name}: expected an int or a list of ints, got {value!r}") from None
    if not values:
        raise ValueError(f"{name}: must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name}: expected integers, got {v!r}")
    return [int(v) for v in values]


class RollingDepthPipeline(DiffusionPipeline):
    """RollingDepth video depth on stock diffusers.

    Load with ``RollingDepthPipeline.from_pretrained("prs-eth/rollingdepth-v1-0")`` or a
    local folder of the same layout; the cross-frame attention processor is installed on
    the UNet at construction.
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
        self._empty_text_embed: torch.Tensor | None = None
        self._attn_span: dict | None = None
        self._snippet_cap: int | None = None  # lowered after an out-of-memory error
        self._warned_oom = False

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
    ) -> "RollingDepthPipeline":
        """Load and move to ``device`` (CUDA, then MPS, then CPU when ``None``).

        fp16 on CPU falls back to fp32 with one warning.
        """
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        pipe = cls.from_pretrained(checkpoint, dtype=torch_dtype, **kwargs)
        return pipe.to(dev)

    # ------------------------------------------------------------------ checks
    def check_inputs(
        self,
        frames,
        processing_res: int,
        dilations,
        snippet_lengths,
        refine_step: int,
        refine_snippet_len: int,
        refine_start_dilation: int,
        coalign_mode: str,
        max_vae_bs: int,
        unet_batch_size: int | None,
        attn_span: dict | None = None,
    ) -> tuple[list[int], list[int] | None]:
        """Validate every argument; return dilations and one snippet length per dilation
        (``None`` for ``"auto"``)."""
        if not isinstance(frames, (np.ndarray, torch.Tensor)):
            raise ValueError(f"frames: expected a numpy array or torch tensor, got {type(frames).__name__}")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 RGB [N, H, W, 3], got shape {tuple(frames.shape)}")
        if frames.dtype not in (np.uint8, torch.uint8):
            raise ValueError(f"frames: expected dtype uint8, got {frames.dtype}")
        if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
            raise ValueError(f"frames: empty input of shape {tuple(frames.shape)}")
        if isinstance(processing_res, bool) or not isinstance(processing_res, (int, np.integer)):
            raise ValueError(f"processing_res: expected an int, got {processing_res!r}")
        if processing_res < 0:
            raise ValueError(f"processing_res: must be >= 0 (0 keeps the size), got {processing_res}")
        dilations = _as_list(dilations, "dilations")
        auto = isinstance(snippet_lengths, str) and snippet_lengths == "auto"
        lengths = [3] if auto else _as_list(snippet_lengths, "snippet_lengths")
        if min(dilations) < 1:
            raise ValueError(f"dilations: every dilation must be >= 1, got {dilations}")
        if 1 not in dilations:
            raise ValueError(f"dilations: must include 1, got {dilations}")
        if len(lengths) == 1:
            lengths = lengths * len(dilations)
        elif len(lengths) != len(dilations):
            raise ValueError(
                f"snippet_lengths: give one value or one per dilation ({len(dilations)}), got {lengths}"
            )
        for name, values in (("snippet_lengths", lengths), ("refine_snippet_len", [refine_snippet_len])):
            if any(isinstance(v, bool) or v < 1 or v > MAX_SNIPPET_LEN for v in values):
                raise ValueError(f"{name}: must be between 1 and {MAX_SNIPPET_LEN}, got {values}")
        max_refine = self.scheduler.config.num_train_timesteps // 2
        if isinstance(refine_step, bool) or not isinstance(refine_step, (int, np.integer)):
            raise ValueError(f"refine_step: expected an int, got {refine_step!r}")
        if refine_step < 0 or refine_step > max_refine:
            raise ValueError(f"refine_step: must be between 0 and {max_refine}, got {refine_step}")
        if refine_start_dilation < 1:
            raise ValueError(f"refine_start_dilation: must be >= 1, got {refine_start_dilation}")
        if coalign_mode not in COALIGN_MODES:
            raise ValueError(f"coalign: unknown mode {coalign_mode!r}; expected one of {COALIGN_MODES}")
        if max_vae_bs < 1:
            raise ValueError(f"max_vae_bs: must be >= 1, got {max_vae_bs}")
        if unet_batch_size is not None and unet_batch_size < 1:
            raise ValueError(f"unet_batch_size: must be >= 1, got {unet_batch_size}")
        if attn_span is not None:
            if not isinstance(attn_span, dict) or not set(attn_span) <= set(ATTENTION_LEVELS):
                raise ValueError(f"attn_span: expected a dict with keys among {ATTENTION_LEVELS}, got {attn_span!r}")
            if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in attn_span.values()):
                raise ValueError(f"attn_span: spans must be integers >= 1, got {attn_span}")
        return dilations, (None if auto else lengths)

    def prepare(self, attn_span: dict | None = None) -> None:
        """Before a run: fp16 on CPU becomes fp32 (one warning); remember the attention spans."""
        self._attn_span = dict(attn_span) if attn_span else None
        if self.unet.device.type == "cpu" and self.dtype == torch.float16:
            warnings.warn("fp16 on CPU is slow and imprecise: running in fp32 instead", stacklevel=3)
            self.to(dtype=torch.float32)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def processing_size(height: int, width: int, processing_res: int) -> tuple[int, int]:
        """Longer edge to ``processing_res`` (floored, aspect kept); 0 keeps the size."""
        if processing_res == 0:
            return height, width
        factor = min(processing_res / width, processing_res / height)
        return max(1, int(height * factor)), max(1, int(width * factor))

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

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """VAE-encode ``[B, 3, H, W]`` in [-1, 1]: mean of the moments times 0.18215."""
        x = self._pad(images).to(device=self.vae.device, dtype=self.vae.dtype)
        moments = self.vae.quant_conv(self.vae.encoder(x))
        mean, _ = torch.chunk(moments, 2, dim=1)
        return mean * self.rgb_latent_scale_factor  # [B, 4, h, w]

    def decode_depth(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Decode ``[B, 4, h, w]`` depth latents to ``[B, H, W]`` (mean of 3 channels, cropped)."""
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

    def _unet_step(
        self,
        rgb_latents: torch.Tensor,  # [B*n, 4, h, w]
        depth_latents: torch.Tensor,  # [B*n, 4, h, w]
        timestep: torch.Tensor,
        num_view: int,
    ) -> torch.Tensor:
        """One denoising step of B snippets of n frames; on out-of-memory, fewer snippets per call.

        The cap is halved (logged once) down to 1 snippet, then the error goes up.
        """
        snippets = rgb_latents.shape[0] // num_view
        cap = self._snippet_cap or snippets
        while True:
            try:
                if snippets <= cap:
                    return self._unet_call(rgb_latents, depth_latents, timestep, num_view)
                parts = []
                for i in range(0, snippets, cap):
                    sl = slice(i * num_view, (i + cap) * num_view)
                    parts.append(self._unet_call(rgb_latents[sl], depth_latents[sl], timestep, num_view))
                return torch.cat(parts)
            except Exception as exc:
                if not is_out_of_memory(exc) or min(cap, snippets) <= 1:
                    raise
                cap = max(1, min(cap, snippets) // 2)
                self._snippet_cap = cap
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if not self._warned_oom:
                    warnings.warn(f"out of memory in the UNet: {cap} snippets per call from now on", stacklevel=2)
                    self._warned_oom = True

    def decode_depth_safe(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """:meth:`decode_depth`, split in halves on out-of-memory (down to one frame)."""
        try:
            return self.decode_depth(latents, size)
        except Exception as exc:
            if not is_out_of_memory(exc) or latents.shape[0] <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if not self._warned_oom:
                warnings.warn("out of memory in the VAE: decoding in smaller batches", stacklevel=2)
                self._warned_oom = True
            half = latents.shape[0] // 2
            return torch.cat([self.decode_depth_safe(latents[:half], size), self.decode_depth_safe(latents[half:], size)])

    def _unet_call(self, rgb_latents, depth_latents, timestep, num_view) -> torch.Tensor:
        """One UNet call and scheduler step (no splitting); ``timestep`` lives on the host."""
        unet_input = torch.cat([rgb_latents, depth_latents], dim=1)  # [B*n, 8, h, w]
        attention_kwargs = {"num_view": num_view}
        if self._attn_span:
            attention_kwargs["attn_span"] = self._attn_span
        model_output = self.unet(
            unet_input,
            timestep.to(unet_input.device, non_blocking=True).expand(unet_input.shape[0]),
            encoder_hidden_states=self.empty_text_embedding(),
            cross_attention_kwargs=attention_kwargs,
            return_dict=False,
        )[0]
        return self.scheduler.step(model_output, timestep, depth_latents).prev_sample

    def _noise(self, shape, generator: torch.Generator | None) -> torch.Tensor:
        """``torch.randn`` as the reference draws it; a generator on another device is honoured."""
        device, dtype = self.unet.device, self.unet.dtype
        if generator is not None and generator.device.type != device.type:
            return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        frames,
        processing_res: int = 768,
        dilations: Sequence[int] = (1, 25),
        cap_dilation: bool = True,
        snippet_lengths: Sequence[int] | int = (3,),
        refine_step: int = 0,
        refine_snippet_len: int = 3,
        refine_start_dilation: int = 6,
        coalign: str = "fast",
        max_vae_bs: int = 4,
        unet_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        callback: ProgressCallback | None = None,
        attn_span: dict | None = None,
    ) -> RollingDepthOutput:
        """Predict depth for ``frames`` (uint8 RGB ``[N, H, W, 3]``, numpy or torch).

        Args:
            processing_res: longer edge for processing; 0 keeps the input size.
            dilations: frame gaps of the snippet groups; must include 1.
            cap_dilation: cap dilations that do not fit the video (``floor(N/n) - 1``).
            snippet_lengths: frames per snippet (num_view), one value or one per dilation, or
                ``"auto"`` to choose from the clip's motion and free memory (``num_view.py``).
            refine_step: coarse-to-fine refinement steps (0 = none).
            refine_snippet_len, refine_start_dilation: refinement snippets.
            coalign: ``"fast"`` (our solver) or ``"reference"`` (the reference optimiser).
            max_vae_bs: frames per VAE call.
            unet_batch_size: snippets per UNet call; ``None`` picks one from free memory.
            generator: seeds the one initial noise shared by every frame.
            callback: ``callback(stage, done, total)`` for progress display.
            attn_span: experimental per-level attention span, e.g. ``{"fine": 2}``: at that UNet
                level a frame attends only to frames less than k apart (k >= n: unchanged).
        """
        timings: dict[str, float] = {}
        notify = callback or (lambda stage, done, total: None)

        # 1. Check inputs
        dilations, lengths = self.check_inputs(
            frames, processing_res, dilations, snippet_lengths, refine_step,
            refine_snippet_len, refine_start_dilation, coalign, max_vae_bs, unet_batch_size, attn_span,
        )
        self.prepare(attn_span)
        device = self.unet.device
        num_frames, in_h, in_w = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
        size = self.processing_size(in_h, in_w, processing_res)
        if lengths is not None:  # fail on a dilation that does not fit before any heavy work
            plan = plan_snippets(num_frames, dilations, lengths, cap_dilation)

        # 2. Resize, normalise and encode every frame once
        t0 = time.perf_counter()
        rgb_latents = self._encode_frames(frames, size, max_vae_bs, notify)  # [N, 4, h, w]
        latent_hw = tuple(rgb_latents.shape[-2:])
        timings["encode"] = time.perf_counter() - t0
        auto_choice = None
        if lengths is None:
            n_auto, auto_choice = choose_num_view(frames, device, latent_hw, self.dtype)
            lengths = [n_auto] * len(dilations)
            plan = plan_snippets(num_frames, dilations, lengths, cap_dilation)

        # 3. One initial noise for every frame
        noise = self._noise((1, 4, *latent_hw), generator)  # [1, 4, h, w]
        self.empty_text_embedding()

        # 4. One-step inference of every snippet, batched through the UNet
        t0 = time.perf_counter()
        snippet_latents = []
        batch_sizes = []
        for d, n in plan:
            bs = unet_batch_size or self.default_unet_batch_size(n, latent_hw)
            batch_sizes.append(bs)
            snippet_latents.append(self._infer_snippets(rgb_latents, noise, d, n, bs, notify))
        timings["snippets"] = time.perf_counter() - t0

        # 5. Decode the snippets' depth latents
        t0 = time.perf_counter()
        snippets = [self._decode_latents(lat, size, max_vae_bs, notify, "decode") for lat in snippet_latents]
        del snippet_latents
        timings["decode"] = time.perf_counter() - t0

        # 6. Co-align and re-normalise to [-1, 1]
        t0 = time.perf_counter()
        notify("coalign", 0, 1)
        used_dilations = [d for d, _ in plan]
        merged, info = coalign_snippets(snippets, used_dilations, mode=coalign, num_frames=num_frames, device=device)
        depth_coaligned = self._renormalise(merged)
        notify("coalign", 1, 1)
        timings["coalign"] = time.perf_counter() - t0

        # 7. Optional coarse-to-fine refinement
        refine_len = min(refine_snippet_len, num_frames)
        refine_d0 = plan_snippets(num_frames, [refine_start_dilation], [refine_len], True)[0][0]
        refine_schedule = refine_dilations(refine_step, refine_d0) if refine_step > 0 else []
        if refine_step > 0:
            t0 = time.perf_counter()
            depth = self._refine(
                rgb_latents, noise, depth_coaligned, refine_step, refine_len, refine_schedule,
                size, max_vae_bs, unet_batch_size, notify,
            )
            timings["refine"] = time.perf_counter() - t0
        else:
            depth = depth_coaligned

        settings = self.run_settings(
            num_frames=num_frames, input_size=(in_h, in_w), size=size, processing_res=processing_res,
            plan=plan, snippets_per_dilation=[int(s.shape[0]) for s in snippets], cap_dilation=cap_dilation,
            refine_step=refine_step, refine_snippet_len=refine_snippet_len, refine_len=refine_len,
            refine_start_dilation=refine_start_dilation, refine_d0=refine_d0, refine_schedule=refine_schedule,
            coalign=coalign, coalign_iterations=info["iterations"], max_vae_bs=max_vae_bs,
            unet_batch_size=batch_sizes, num_view_auto=auto_choice,
        )
        return RollingDepthOutput(
            depth=depth,
            depth_coaligned=depth_coaligned,
            snippets=snippets,
            coalign_loss=float(info["loss"]),
            settings=settings,
            timings=timings,
        )

    def run_settings(
        self, *, num_frames, input_size, size, processing_res, plan, snippets_per_dilation, cap_dilation,
        refine_step, refine_snippet_len, refine_len, refine_start_dilation, refine_d0, refine_schedule,
        coalign, coalign_iterations, max_vae_bs, unet_batch_size, num_view_auto,
    ) -> dict:
        """The values a run actually used (after capping), as reported in ``settings``."""
        return {
            "num_frames": num_frames,
            "input_size": list(input_size),
            "processing_size": list(size),
            "processing_res": int(processing_res),
            "dilations": [d for d, _ in plan],
            "snippet_lengths": [n for _, n in plan],
            "snippets_per_dilation": snippets_per_dilation,
            "cap_dilation": bool(cap_dilation),
            "refine_step": int(refine_step),
            "refine_snippet_len": refine_len if refine_step > 0 else int(refine_snippet_len),
            "refine_start_dilation": refine_d0 if refine_step > 0 else int(refine_start_dilation),
            "refine_dilations": refine_schedule,
            "coalign": coalign,
            "coalign_iterations": coalign_iterations,
            "max_vae_bs": int(max_vae_bs),
            "unet_batch_size": unet_batch_size,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.unet.device),
            "attn_span": self._attn_span,
            "num_view_auto": num_view_auto,
        }

    # ------------------------------------------------------------------ stages
    def _encode_frames(self, frames, size, max_vae_bs: int, notify: ProgressCallback) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> latents ``[N, 4, h, w]``, one batch of frames at a time."""
        device = self.vae.device
        num_frames = frames.shape[0]
        latents = []
        for start in range(0, num_frames, max_vae_bs):
            chunk = frames[start : start + max_vae_bs]
            chunk = torch.from_numpy(np.ascontiguousarray(chunk)) if isinstance(chunk, np.ndarray) else chunk
            x = to_device(chunk, device).permute(0, 3, 1, 2).float()  # [B, 3, H, W], 0..255
            x = self.resize_frames(x, size)
            x = x / 255.0 * 2.0 - 1.0
            latents.append(self.encode(x.to(self.vae.dtype)))
            notify("encode", min(start + max_vae_bs, num_frames), num_frames)
        return torch.cat(latents)

    def _infer_snippets(
        self, rgb_latents, noise, dilation: int, n: int, batch_size: int, notify: ProgressCallback
    ) -> torch.Tensor:
        """Depth latents ``[S, n, 4, h, w]`` of every snippet of one dilation."""
        self.scheduler.set_timesteps(1)  # on the host: the scheduler's step then never syncs
        timestep = self.scheduler.timesteps[0]
        idx = torch.from_numpy(snippet_indices(rgb_latents.shape[0], n, dilation)).to(rgb_latents.device)
        num_snippets = idx.shape[0]
        out = torch.empty((num_snippets, n, *rgb_latents.shape[1:]), device=rgb_latents.device, dtype=rgb_latents.dtype)
        for start in range(0, num_snippets, batch_size):
            frame_ids = idx[start : start + batch_size].reshape(-1)  # [B*n]
            init = noise.expand(frame_ids.shape[0], -1, -1, -1)
            pred = self._unet_step(rgb_latents[frame_ids], init, timestep, n)
            out[start : start + batch_size] = pred.view(-1, n, *pred.shape[1:])
            notify(f"snippets d={dilation}", min(start + batch_size, num_snippets), num_snippets)
        return out

    def _decode_latents(self, latents, size, max_vae_bs: int, notify: ProgressCallback, stage: str) -> np.ndarray:
        """Decode ``[..., 4, h, w]`` latents in VAE batches to float32 ``[..., H, W]`` on the host."""
        lead = latents.shape[:-3]
        flat = latents.reshape(-1, *latents.shape[-3:])
        out = np.empty((flat.shape[0], *size), dtype=np.float32)
        for start in range(0, flat.shape[0], max_vae_bs):
            decoded = self.decode_depth_safe(flat[start : start + max_vae_bs], size)
            out[start : start + decoded.shape[0]] = decoded.float().cpu().numpy()
            notify(stage, min(start + max_vae_bs, flat.shape[0]), flat.shape[0])
        return out.reshape(*lead, *size)

    @staticmethod
    def _renormalise(depth: np.ndarray) -> np.ndarray:
        """Whole video to [-1, 1]: ``(v - min) / (max - min) * 2 - 1`` (constant -> 0)."""
        lo, hi = float(depth.min()), float(depth.max())
        if hi - lo <= 0:
            return np.zeros_like(depth, dtype=np.float32)
        return ((depth - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)

    def _refine(
        self, rgb_latents, noise, depth_coaligned, refine_step, snippet_len, schedule,
        size, max_vae_bs, unet_batch_size, notify,
    ) -> np.ndarray:
        """Coarse-to-fine refinement of the co-aligned depth; returns the decoded prediction."""
        device, dtype = rgb_latents.device, rgb_latents.dtype
        num_frames = rgb_latents.shape[0]
        # Encode the co-aligned depth like RGB (3 equal channels)
        depth_latents = []
        for start in range(0, num_frames, max_vae_bs):
            d = to_device(torch.from_numpy(depth_coaligned[start : start + max_vae_bs]), device)
            depth_latents.append(self.encode(d[:, None].expand(-1, 3, -1, -1).to(dtype)))
        latents = torch.cat(depth_latents)  # [N, 4, h, w]

        self.scheduler.set_timesteps(2 * refine_step)  # on the host
        timesteps = self.scheduler.timesteps[refine_step:]
        frame_noise = noise.expand(num_frames, -1, -1, -1)
        latents = self.scheduler.add_noise(latents, frame_noise, timesteps[:1])
        batch_size = unet_batch_size or self.default_unet_batch_size(snippet_len, tuple(latents.shape[-2:]))
        for i, (t, dilation) in enumerate(zip(timesteps, schedule)):
            idx = torch.from_numpy(snippet_indices(num_frames, snippet_len, dilation)).to(device)
            acc = torch.zeros(latents.shape, device=device, dtype=torch.float32)
            count = torch.zeros(num_frames, device=device, dtype=torch.float32)
            for start in range(0, idx.shape[0], batch_size):
                frame_ids = idx[start : start + batch_size].reshape(-1)
                pred = self._unet_step(rgb_latents[frame_ids], latents[frame_ids], t, snippet_len)
                acc.index_add_(0, frame_ids, pred.float())
                count.index_add_(0, frame_ids, torch.ones(frame_ids.shape[0], device=device))
            latents = (acc / count[:, None, None, None]).to(dtype)
            notify("refine", i + 1, refine_step)
        return self._decode_latents(latents, size, max_vae_bs, notify, "refine decode")
