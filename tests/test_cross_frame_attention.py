import logging

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from rollingdepth.method.cross_frame_attention import CrossFrameAttnProcessor, set_cross_frame_attention

from .conftest import TINY_CHECKPOINT


def explicit_joint_attention(attn: Attention, x: torch.Tensor, n: int) -> torch.Tensor:
    """Self-attention over the concatenated tokens of n frames, written out by hand."""
    total, tokens, channels = x.shape
    b = total // n
    heads = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)  # [(b n), hw, inner]
    d = q.shape[-1] // heads

    def split(t):  # [(b n), hw, heads*d] -> [b, heads, n*hw, d]
        return t.reshape(b, n * tokens, heads, d).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # [b, heads, nhw, nhw]
    out = (weights @ v).permute(0, 2, 1, 3).reshape(b, n * tokens, heads * d)
    out = attn.to_out[0](out)
    return out.reshape(total, tokens, -1)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("b", [1, 2])
def test_processor_equals_explicit_joint_attention(n, b):
    torch.manual_seed(n * 10 + b)
    attn = Attention(query_dim=32, heads=4, dim_head=8, processor=CrossFrameAttnProcessor())
    x = torch.randn(b * n, 6 * 5, 32)
    got = attn(x, num_view=n)
    want = explicit_joint_attention(attn, x, n)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # and it is not per-frame attention: joining the frames changes the result
    per_frame = attn(x, num_view=1)
    assert (got - per_frame).abs().max() > 1e-3


def test_cross_attention_stays_per_image_with_broadcast_text():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=4, dim_head=8)
    x, text = torch.randn(6, 20, 32), torch.randn(1, 2, 16)
    attn.set_processor(AttnProcessor2_0())
    want = attn(x, encoder_hidden_states=text.expand(6, -1, -1))
    attn.set_processor(CrossFrameAttnProcessor())
    got = attn(x, encoder_hidden_states=text, num_view=3)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_num_view_must_divide_batch():
    attn = Attention(query_dim=32, heads=4, dim_head=8, processor=CrossFrameAttnProcessor())
    with pytest.raises(ValueError, match="num_view"):
        attn(torch.randn(4, 10, 32), num_view=3)


@pytest.fixture(scope="module")
def unet():
    model = UNet2DConditionModel.from_pretrained(TINY_CHECKPOINT, subfolder="unet")
    return model.eval()


def _unet_inputs(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 8, 8, 12, generator=g)
    text = torch.randn(1, 2, 32, generator=g)
    return sample, torch.full((batch,), 999), text


@pytest.mark.parametrize("num_view", [None, 1])
def test_unet_num_view_1_equals_stock_processor(unet, num_view):
    sample, t, text = _unet_inputs(3)
    unet.set_attn_processor(AttnProcessor2_0())
    with torch.no_grad():
        want = unet(sample, t, encoder_hidden_states=text.expand(3, -1, -1)).sample
    set_cross_frame_attention(unet)
    kwargs = None if num_view is None else {"num_view": num_view}
    with torch.no_grad():
        got = unet(sample, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample
    # the broadcast text embedding takes another matmul path than the expanded one: float noise
    # of up to 1.04e-6 (measured with torch 2.13, diffusers 0.42)
    torch.testing.assert_close(got, want, atol=5e-6, rtol=0)


@pytest.mark.parametrize("n", [2, 3])
def test_batched_snippets_equal_separate_calls(unet, n):
    set_cross_frame_attention(unet)
    b = 3
    sample, t, text = _unet_inputs(b * n, seed=n)
    with torch.no_grad():
        joint = unet(sample, t, encoder_hidden_states=text, cross_attention_kwargs={"num_view": n}).sample
        parts = [
            unet(sample[i * n : (i + 1) * n], t[:n], encoder_hidden_states=text, cross_attention_kwargs={"num_view": n}).sample
            for i in range(b)
        ]
    torch.testing.assert_close(joint, torch.cat(parts), atol=1e-5, rtol=0)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_no_unexpected_kwargs_warning(unet):
    handler = _Records()
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    try:
        set_cross_frame_attention(unet)
        sample, t, text = _unet_inputs(6)
        with torch.no_grad():
            unet(sample, t, encoder_hidden_states=text, cross_attention_kwargs={"num_view": 3})
        # the stock processor would warn: proves the handler sees such warnings
        unet.set_attn_processor(AttnProcessor2_0())
        with torch.no_grad():
            unet(sample, t, encoder_hidden_states=text.expand(6, -1, -1), cross_attention_kwargs={"num_view": 3})
    finally:
        diffusers_logger.removeHandler(handler)
        set_cross_frame_attention(unet)
    warned = [m for m in handler.messages if "are not expected by" in m]
    assert warned, "the check cannot see diffusers' warning"
    assert all("AttnProcessor2_0" in m for m in warned), warned


def test_processor_installed_on_every_layer(unet):
    set_cross_frame_attention(unet)
    procs = unet.attn_processors
    assert procs and all(isinstance(p, CrossFrameAttnProcessor) for p in procs.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_checkpoint_unet_forward_num_view_3(tiny_pipe, dtype):
    unet = UNet2DConditionModel.from_pretrained(TINY_CHECKPOINT, subfolder="unet", torch_dtype=dtype)
    set_cross_frame_attention(unet)
    sample, t, text = _unet_inputs(6)
    with torch.no_grad():
        out = unet(sample.to(dtype), t, encoder_hidden_states=text.to(dtype), cross_attention_kwargs={"num_view": 3}).sample
    assert out.shape == (6, 4, 8, 12) and out.dtype == dtype
    assert torch.isfinite(out.float()).all()
