"""Cross-frame self-attention for a stock diffusers ``UNet2DConditionModel``.

RollingDepth feeds a snippet of ``n`` frames through the UNet as ``n`` consecutive
images of the batch. In every self-attention layer the tokens of those ``n`` frames are
joined into one sequence, so that each frame attends to all frames of its snippet:

    (b n) hw c -> b (n hw) c      attention over n*hw tokens      b (n hw) c -> (b n) hw c

Cross-attention (to the text embedding) stays per image. ``num_view`` reaches the
processor through the UNet's ``cross_attention_kwargs={"num_view": n}``; with ``n = 1``
(or absent) the processor computes exactly what diffusers' ``AttnProcessor2_0`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ATTENTION_LEVELS", "CrossFrameAttnProcessor", "attention_level", "set_cross_frame_attention"]

# UNet resolutions, finest first: "fine" sees (H/8)(W/8) tokens per frame at SD2 scale,
# "medium" a quarter of that, "coarse" a sixteenth (and the mid block a 64th).
ATTENTION_LEVELS = ("fine", "medium", "coarse")


class CrossFrameAttnProcessor:
    """Attention processor joining the frames of each snippet in self-attention.

    A plain callable, like diffusers' ``AttnProcessor2_0``, built on
    ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch picks the flash or
    memory-efficient kernel where it can). Every custom keyword is named in ``__call__``
    so that diffusers' ``Attention.forward`` passes it through without a warning.

    Args:
        level: the UNet level of the layer (``fine``, ``medium``, ``coarse``), for per-level spans.
        backend: ``"sdpa"`` (default) or ``"math"``, a plain attention that materialises the
            softmax matrix (for measuring what SDPA saves; same result).
    """

    def __init__(self, level: str | None = None, backend: str = "sdpa"):
        if backend not in ("sdpa", "math"):
            raise ValueError(f"backend: expected 'sdpa' or 'math', got {backend!r}")
        self.level = level
        self.backend = backend
        self._masks: dict = {}

    def __call__(
        self,
        attn,  # diffusers.models.attention_processor.Attention
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_view: int | None = None,
        attn_span: dict | None = None,
    ) -> torch.Tensor:
        """``attn_span`` (experimental) maps a level name to a span ``k``: frames attend only to
        frames less than ``k`` apart in the snippet; ``k >= num_view`` is plain joint attention."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:  # [B, C, H, W] -> [B, HW, C]
            _, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)

        n, span = self._views(num_view, attn_span)
        join = encoder_hidden_states is None and n > 1 and span > 1  # span 1: every frame on its own
        total, tokens, _ = hidden_states.shape  # [(b n), hw, c]
        hidden_states, attention_mask = self._join(attn, hidden_states, encoder_hidden_states, attention_mask,
                                                   (n, span) if join else None)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        hidden_states = self._attend(attn, hidden_states, encoder_hidden_states, attention_mask)
        if join:  # b (n hw) c -> (b n) hw c
            hidden_states = hidden_states.reshape(total, tokens, -1)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(total, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _views(self, num_view: int | None, attn_span: dict | None) -> tuple[int, int]:
        """The snippet's frame count ``n`` and this layer's span (``n`` unless ``attn_span`` sets it)."""
        n = 1 if num_view is None else int(num_view)
        if n < 1:
            raise ValueError(f"num_view must be >= 1, got {num_view}")
        span = n
        if attn_span and self.level in attn_span:
            span = int(attn_span[self.level])
            if span < 1:
                raise ValueError(f"attn_span: spans must be >= 1, got {attn_span}")
        return n, span

    def _join(self, attn, hidden_states, encoder_hidden_states, attention_mask, joint: tuple[int, int] | None):
        """Join the frames of each snippet, ``joint = (n, span)`` (None: keep them apart), and
        prepare the attention mask. Returns the tokens ``[B, L, c]`` and the mask."""
        total, tokens, channels = hidden_states.shape  # [(b n), hw, c]
        if joint is not None:
            n, span = joint
            if total % n != 0:
                raise ValueError(
                    f"num_view={n} does not divide the UNet batch of {total} images"
                )
            if attention_mask is not None:
                raise ValueError("cross-frame attention does not take an attention_mask")
            # (b n) hw c -> b (n hw) c: frames of one snippet are consecutive in the batch,
            # so this is a view of the same memory.
            hidden_states = hidden_states.reshape(total // n, n * tokens, channels)
        batch = hidden_states.shape[0]
        if joint is not None and joint[1] < joint[0]:
            attention_mask = self._span_mask(joint[0], tokens, joint[1], hidden_states.device)  # [nhw, nhw] bool
        elif attention_mask is not None:
            kv_len = tokens if encoder_hidden_states is None else encoder_hidden_states.shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, kv_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        return hidden_states, attention_mask

    def _attend(self, attn, hidden_states, encoder_hidden_states, attention_mask) -> torch.Tensor:
        """Project to queries, keys and values, attend, project out: ``[B, L, c]`` -> ``[B, L, c_out]``."""
        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        # One text embedding ([1, L, C]) serves every image: project once, broadcast.
        kv_batch = key.shape[0]
        if kv_batch != batch:
            if kv_batch != 1:
                raise ValueError(
                    f"encoder_hidden_states has batch {kv_batch}; expected 1 or {batch}"
                )
            key = key.expand(batch, -1, -1)
            value = value.expand(batch, -1, -1)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        # [B, L, heads*d] -> [B, heads, L, d]
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.backend == "math":
            hidden_states = _plain_attention(query, key, value, attention_mask)
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )  # [B, heads, L, d]
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        return attn.to_out[1](hidden_states)  # dropout

    def _span_mask(self, n: int, tokens: int, span: int, device) -> torch.Tensor:
        """Boolean ``[n*hw, n*hw]``: token of frame i may attend to frame j iff |i - j| < span."""
        key = (n, tokens, span, str(device))
        mask = self._masks.get(key)
        if mask is None:
            frame = torch.arange(n, device=device).repeat_interleave(tokens)  # [n*hw]
            mask = (frame[:, None] - frame[None, :]).abs() < span
            self._masks = {key: mask}  # keep one: masks are large
        return mask


def _plain_attention(query, key, value, mask):
    """softmax(q k^T / sqrt(d)) v with the weight matrix materialised: [B, heads, L, L]."""
    scores = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.softmax(scores, dim=-1) @ value


def attention_level(name: str, num_levels: int) -> str:
    """Level of an attention layer from its name in a UNet with ``num_levels`` resolutions."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        index = num_levels - 1
    elif parts[0] == "down_blocks":
        index = int(parts[1])
    elif parts[0] == "up_blocks":
        index = num_levels - 1 - int(parts[1])
    else:
        index = 0
    return ATTENTION_LEVELS[min(index, len(ATTENTION_LEVELS) - 1)]


def set_cross_frame_attention(unet: torch.nn.Module, backend: str = "sdpa") -> dict:
    """Install a :class:`CrossFrameAttnProcessor` on every attention layer of ``unet``.

    Every layer then accepts ``num_view`` (and ``attn_span``) in ``cross_attention_kwargs``,
    so diffusers logs no "unexpected kwargs" warning on any of them. Each processor knows its
    UNet level. Returns ``{layer name: level}``.
    """
    num_levels = len(unet.config.block_out_channels)
    levels = {name: attention_level(name, num_levels) for name in unet.attn_processors}
    unet.set_attn_processor({name: CrossFrameAttnProcessor(level, backend) for name, level in levels.items()})
    return levels
