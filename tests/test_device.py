"""Device and dtype choice, and host-to-device copies that do not make the host wait."""

import pytest
import torch

from rollingdepth.method.device import resolve_device, resolve_dtype, to_device


def test_dtype_names_and_cpu_fallback():
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        assert resolve_dtype("fp16", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="^dtype: unknown value 'fp8'"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_bad_device_names_the_parameter():
    with pytest.raises(ValueError, match="^device: 'gpu0' is not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="^device: 'cuda' asked for, but CUDA is not available"):
            resolve_device("cuda")


def test_to_device_on_the_host_keeps_values_and_does_not_copy():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert to_device(x, "cpu") is x
    y = to_device(x, "cpu", torch.float16)
    assert y.dtype == torch.float16 and torch.equal(y.float(), x)


def test_to_device_stages_cuda_copies_in_pinned_memory(monkeypatch):
    """Towards CUDA the copy is queued (pinned source, non_blocking), never a synchronising copy."""
    calls = []
    original_to = torch.Tensor.to

    def fake_pin(self):
        calls.append("pin")
        return self

    def fake_to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, torch.device) and target.type == "cuda":
            calls.append(("to cuda", kwargs.get("non_blocking", False)))
            return self
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: False)
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    out = to_device(torch.ones(2, 3), "cuda", torch.float16)
    assert calls == ["pin", ("to cuda", True)]
    assert out.dtype == torch.float16


def test_accelerate_pipeline_sets_tf32_only_where_cuda_is(monkeypatch):
    """--tf32/--no-tf32 set both TF32 switches when CUDA is available, and touch nothing
    otherwise (the switches exist, and are settable, on CPU builds too)."""
    from types import SimpleNamespace

    from rollingdepth.method.loading import accelerate_pipeline

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    monkeypatch.setattr(matmul, "allow_tf32", matmul.allow_tf32)  # restored afterwards
    monkeypatch.setattr(cudnn, "allow_tf32", cudnn.allow_tf32)
    pipe = SimpleNamespace()  # neither compile nor channels-last: the pipeline is not touched
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for tf32 in (True, False, True):
        accelerate_pipeline(pipe, tf32=tf32)
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (tf32, tf32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    matmul.allow_tf32, cudnn.allow_tf32 = False, True
    accelerate_pipeline(pipe, tf32=True)
    assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)
    accelerate_pipeline(pipe, tf32=False)
    assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)


def test_compile_runs_for_real_and_matches_eager():
    """The real torch.compile (inductor, which needs a C++ compiler on CPU) on the tiny
    model, via accelerate_pipeline: the UNet and VAE parts are compiled modules, and the
    VAE decoder, compiled and run once, gives the eager decoder's output."""
    import shutil

    from rollingdepth import RollingDepthPipeline
    from rollingdepth.method.loading import accelerate_pipeline

    from .conftest import TINY_CHECKPOINT, require

    require(any(shutil.which(c) for c in ("cc", "gcc", "c++")), "torch.compile on CPU needs a C/C++ compiler; none on PATH")
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    pipe = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT), torch_dtype=torch.float32)
    latents = torch.randn(2, pipe.vae.config.latent_channels, 4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = pipe.vae.decoder(pipe.vae.post_quant_conv(latents))
    torch._dynamo.reset()
    counters.clear()
    accelerate_pipeline(pipe, compile=True, tf32=False)
    for part in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder):
        assert isinstance(part, OptimizedModule), type(part)
    # scalar C++ kernels: about half the compile time of vectorised ones (~20 vs ~35 CPU-s)
    with torch.no_grad(), torch._inductor.config.patch({"cpp.vec_isa_ok": False}):
        compiled = pipe.vae.decoder(pipe.vae.post_quant_conv(latents))
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured and compiled a graph
    assert compiled.shape == eager.shape
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()
