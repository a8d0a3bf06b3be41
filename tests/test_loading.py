"""The tiny checkpoint and the Hub id load through the same code path, quietly, offline."""

import shutil

import pytest
import torch

from rollingdepth import RollingDepthPipeline
from rollingdepth.cross_frame_attention import CrossFrameAttnProcessor

from .conftest import TINY_CHECKPOINT

HUB_ID = "prs-eth/rollingdepth-v1-0"


def _check_pipe(pipe):
    assert isinstance(pipe, RollingDepthPipeline)
    assert pipe.unet.config.in_channels == 8
    assert all(isinstance(p, CrossFrameAttnProcessor) for p in pipe.unet.attn_processors.values())
    emb = pipe.empty_text_embedding()
    assert emb.shape == (1, 2, pipe.text_encoder.config.hidden_size)


def test_tiny_checkpoint_loads_quietly(capfd):
    pipe = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT))
    out, err = capfd.readouterr()
    _check_pipe(pipe)
    assert out == "" and err == "", f"loading printed:\n{out}{err}"


def test_hub_id_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """The Hub id goes through huggingface_hub's cache: lay the tiny checkpoint out as a
    cached snapshot of prs-eth/rollingdepth-v1-0 and load it by id, offline."""
    cache = tmp_path / "hub"
    repo = cache / "models--prs-eth--rollingdepth-v1-0"
    revision = "0" * 40
    shutil.copytree(TINY_CHECKPOINT, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = RollingDepthPipeline.from_pretrained(HUB_ID, cache_dir=str(cache))
    _check_pipe(pipe)
    ref = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT))
    for a, b in zip(pipe.unet.parameters(), ref.unet.parameters()):
        assert torch.equal(a, b)


def test_missing_checkpoint_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception):
        RollingDepthPipeline.from_pretrained("no-such-org/no-such-model", cache_dir=str(tmp_path))


def test_load_falls_back_to_fp32_on_cpu():
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        pipe = RollingDepthPipeline.load(str(TINY_CHECKPOINT), dtype="fp16", device="cpu")
    assert pipe.dtype == torch.float32 and pipe.device.type == "cpu"
