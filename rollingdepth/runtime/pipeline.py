"""RollingDepthPipeline: video depth from snippets of frames, co-aligned, optionally refined.

The public pipeline: :class:`~rollingdepth.method.pipeline.RollingDepthModel` (the model and
the method's steps on batches) with ``__call__``, which runs the passes of
:mod:`rollingdepth.runtime.passes` over an in-memory store, as run-video runs them over a
work folder on disk (``docs/architecture.md``). No file I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers.utils import BaseOutput

from rollingdepth.method.pipeline import RollingDepthModel
from rollingdepth.method.settings import MethodSettings
from rollingdepth.runtime.passes import run
from rollingdepth.runtime.stores import MemoryStore

__all__ = ["RollingDepthOutput", "RollingDepthPipeline"]


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
        counts: work done: ``vae_encodes`` and ``vae_decodes`` (frames), ``unet_calls``,
            ``unet_frames``.
    """

    depth: np.ndarray
    depth_coaligned: np.ndarray
    snippets: list
    coalign_loss: float
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)


class RollingDepthPipeline(RollingDepthModel):
    """RollingDepth video depth on stock diffusers.

    Load with ``RollingDepthPipeline.from_pretrained("prs-eth/rollingdepth-v1-0")`` or a
    local folder of the same layout (or :meth:`load`); the cross-frame attention processor is
    installed on the UNet at construction. The model and its steps are
    :class:`~rollingdepth.method.pipeline.RollingDepthModel`'s; this class adds ``__call__``.
    """

    @torch.no_grad()
    def __call__(
        self,
        frames,
        processing_res: int = 768,
        dilations: Sequence[int] = (1, 25),
        cap_dilation: bool = True,
        snippet_lengths: Sequence[int] | int | str = (3,),
        refine_step: int = 0,
        refine_snippet_len: int = 3,
        refine_start_dilation: int = 6,
        coalign: str = "fast",
        max_vae_bs: int = 4,
        unet_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[str, int, int], None] | None = None,
        attn_span: dict | None = None,
    ) -> RollingDepthOutput:
        """Predict depth for ``frames`` (uint8 RGB ``[N, H, W, 3]``, numpy or torch), in memory.

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
            callback: ``callback(stage, done, total)`` for progress display; ``stage`` is the
                stage's text (``"encode"``, ``"snippets d=10"``, ``"coalign"``, ``"merge"``, ...).
            attn_span: experimental per-level attention span, e.g. ``{"fine": 2}``: at that UNet
                level a frame attends only to frames less than k apart (k >= n: unchanged).
        """
        # 1. Check inputs
        settings = self.check_inputs(frames, MethodSettings(
            processing_res=processing_res, dilations=dilations, cap_dilation=cap_dilation,
            snippet_lengths=snippet_lengths, refine_step=refine_step, refine_snippet_len=refine_snippet_len,
            refine_start_dilation=refine_start_dilation, coalign=coalign, max_vae_bs=max_vae_bs,
            unet_batch_size=unet_batch_size, attn_span=attn_span,
        ))

        # 2. Run the method (encode, snippets, co-align, merge, re-normalise, refine) in memory
        rows = (f.cpu().numpy() if isinstance(f, torch.Tensor) else f for f in frames)  # [H, W, 3] each
        progress = None if callback is None else lambda stage, done, total: callback(str(stage), done, total)
        result = run(self, rows, MemoryStore(), settings, generator=generator, callback=progress,
                     num_frames_hint=int(frames.shape[0]))

        # 3. Output
        return RollingDepthOutput(
            depth=result.depth,
            depth_coaligned=result.depth_coaligned,
            snippets=result.snippets,
            coalign_loss=result.coalign_loss,
            settings=result.settings,
            timings=result.timings,
            counts=result.counts.as_dict(),
        )
