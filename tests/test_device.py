"""Device and dtype choice, and host-to-device copies that do not make the host wait."""


import pytest
import torch

from rollingdepth.method.device import (CPU_BF16_ENV, _cpuinfo_has_bf16, cpu_has_native_bf16, denormals_flushed,
                                        flush_denormals, resolve_device, resolve_dtype, to_device)

from .conftest import TINY_CHECKPOINT

CPU = torch.device("cpu")


def test_dtype_names_and_cpu_fallback(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")  # a CPU without native bf16
    assert resolve_dtype("bf16", CPU) == torch.bfloat16
    with pytest.warns(UserWarning, match="fp16 on CPU is slow and imprecise: running in fp32 instead"):
        assert resolve_dtype("fp16", CPU) == torch.float32
    with pytest.raises(ValueError, match="^dtype: unknown value 'fp8'"):
        resolve_dtype("fp8", CPU)


def test_fp16_runs_in_bf16_on_a_cpu_with_native_bf16(monkeypatch, recwarn):
    """fp16 becomes bf16 (one warning); fp32, bf16 and fp16 on an accelerator are kept, silently."""
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    with pytest.warns(UserWarning, match="^fp16 on CPU: running in bf16 instead") as caught:
        assert resolve_dtype("fp16", CPU) == torch.bfloat16
    assert len(caught) == 1
    recwarn.clear()
    assert resolve_dtype("fp32", CPU) == torch.float32
    assert resolve_dtype(torch.bfloat16, CPU) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cuda")) == torch.float16  # no CUDA needed to decide
    assert not recwarn.list


@pytest.mark.parametrize("native", ["0", "1"])
def test_the_paper_preset_stays_fp32_either_way(monkeypatch, native):
    from rollingdepth.runtime.run_config import RunConfig

    monkeypatch.setenv(CPU_BF16_ENV, native)
    assert resolve_dtype(RunConfig.build("paper", {}).dtype, CPU) == torch.float32
    fast = torch.bfloat16 if native == "1" else torch.float32
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        assert resolve_dtype(RunConfig.build("fast", {}).dtype, CPU) == fast


def test_native_bf16_detection_reads_the_cpu_flags(monkeypatch, tmp_path):
    """avx512_bf16 or amx_bf16 in the flags line; the variable forces the answer either way."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    with_bf16 = tmp_path / "zen4"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    amx = tmp_path / "spr"
    amx.write_text("flags\t: fpu avx512f amx_tile amx_bf16 amx_int8\n")
    without = tmp_path / "zen3"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\nbugs\t: avx512_bf16\n")
    assert _cpuinfo_has_bf16(str(with_bf16)) and _cpuinfo_has_bf16(str(amx))
    assert not _cpuinfo_has_bf16(str(without))  # only the flags line counts
    assert not _cpuinfo_has_bf16(str(tmp_path / "absent"))
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert cpu_has_native_bf16()
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert not cpu_has_native_bf16()
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match=f"^{CPU_BF16_ENV}: expected 0 or 1"):
        cpu_has_native_bf16()


@pytest.mark.parametrize(("native", "expected"), [("1", torch.bfloat16), ("0", torch.float32)])
def test_loading_and_prepare_follow_the_same_rule(monkeypatch, native, expected):
    """load_pipeline (run-video's loader) and prepare() (a pipeline built in fp16 by hand) both
    turn fp16 on a CPU into bf16 or fp32 as the CPU allows; fp32 stays fp32."""
    from rollingdepth import RollingDepthPipeline
    from rollingdepth.runtime.loading import load_pipeline

    monkeypatch.setenv(CPU_BF16_ENV, native)
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        assert load_pipeline(str(TINY_CHECKPOINT), "fp16", "cpu").dtype == expected
    assert load_pipeline(str(TINY_CHECKPOINT), "fp32", "cpu").dtype == torch.float32
    pipe = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT), torch_dtype=torch.float16)
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        pipe.prepare()
    assert pipe.dtype == pipe.unet.dtype == pipe.vae.dtype == expected


@pytest.mark.parametrize("before", [False, True])
def test_flush_denormals_flushes_inside_and_restores_after(before):
    torch.set_flush_denormal(before)
    try:
        assert denormals_flushed() == before
        tiny = torch.tensor([1e-40], dtype=torch.float64).to(torch.float32)  # subnormal
        with flush_denormals():
            assert denormals_flushed()
            assert float((tiny * 1.0)[0]) == 0.0
        assert denormals_flushed() == before
        with pytest.raises(RuntimeError), flush_denormals():
            raise RuntimeError("restored on the way out too")
        assert denormals_flushed() == before
        with flush_denormals(enabled=False):
            assert denormals_flushed() == before
    finally:
        torch.set_flush_denormal(False)


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
    """Towards CUDA the copy is queued (pinned source, non_blocking), never a synchronising copy.

    Checked here, without CUDA: ``to_device``'s choice. A host tensor bound for a CUDA device
    is pinned first (unless it already is), copied with ``non_blocking=True``, and converted to
    the dtype after the copy. ``Tensor.to``, ``is_pinned`` and ``pin_memory`` are stand-ins:
    a CPU-only torch can neither pin memory nor make a CUDA tensor, so no real copy runs.
    Only a CUDA machine can check what the choice is for: that the host does not wait (a copy
    queued behind a long kernel returns before ``torch.cuda.synchronize()``), that the pinned
    buffer lives until the copy is done (the values arrive intact though the caller drops the
    source at once), and that the copy equals its source. No test here runs on CUDA.
    """
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

    from rollingdepth.runtime.loading import accelerate_pipeline

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
