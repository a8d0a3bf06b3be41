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

__all__ = ["CrossFrameAttnProcessor", "set_cross_frame_attention"]


class CrossFrameAttnProcessor:
    """Attention processor joining the frames of each snippet in self-attention.

    A plain callable, like diffusers' ``AttnProcessor2_0``, built on
    ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch picks the flash or
    memory-efficient kernel where it can). Every custom keyword is named in ``__call__``
    so that diffusers' ``Attention.forward`` passes it through without a warning.
    """

    def __call__(
        self,
        attn,  # diffusers.models.attention_processor.Attention
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_view: int | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:  # [B, C, H, W] -> [B, HW, C]
            _, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)

        is_self_attention = encoder_hidden_states is None
        n = 1 if num_view is None else int(num_view)
        if n < 1:
            raise ValueError(f"num_view must be >= 1, got {num_view}")
        join = is_self_attention and n > 1

        total, tokens, channels = hidden_states.shape  # [(b n), hw, c]
        if join:
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

        if attention_mask is not None:
            kv_len = tokens if encoder_hidden_states is None else encoder_hidden_states.shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, kv_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

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

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )  # [B, heads, L, d]
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if join:  # b (n hw) c -> (b n) hw c
            hidden_states = hidden_states.reshape(total, tokens, -1)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(total, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def set_cross_frame_attention(unet: torch.nn.Module) -> CrossFrameAttnProcessor:
    """Install one :class:`CrossFrameAttnProcessor` on every attention layer of ``unet``.

    Every layer then accepts ``num_view`` in ``cross_attention_kwargs``, so diffusers logs
    no "unexpected kwargs" warning on any of them. Returns the installed processor.
    """
    processor = CrossFrameAttnProcessor()
    unet.set_attn_processor(processor)
    return processor
