"""Device and dtype choice, and host-to-device copies that do not make the host wait."""

import pytest
import torch

from rollingdepth.device import resolve_device, resolve_dtype, to_device


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
