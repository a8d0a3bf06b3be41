"""num_view: adaptive choice, per-level attention span, OOM advice, benchmark smoke run.

``python -m tests.test_num_view`` prints the motion scores of the example clips, the table
in docs/num_view.md.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from rollingdepth.method.cross_frame_attention import CrossFrameAttnProcessor, attention_level
from rollingdepth.method.num_view import MIN_FREE_GB_FOR_4, MOTION_FAST, MOTION_SLOW, choose_num_view, motion_score

from .conftest import TINY_CHECKPOINT

REPO = Path(__file__).resolve().parent.parent
GB = 2**30
SAMPLE_CLIP = REPO / "data" / "samples" / "synthetic_scene.mp4"
LATENT_HW = (54, 96)  # 768 x 432
EXAMPLE_SIZE = (192, 320)  # the sample clip's size


def panning_clip(step_px: float, frames: int = 10, size=(96, 160), seed=0) -> np.ndarray:
    """A textured image panned by ``step_px`` pixels per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 255, (size[0], size[1] * 4, 3), dtype=np.uint8), (7, 7), 2)
    out = []
    for i in range(frames):
        m = np.float32([[1, 0, -step_px * i], [0, 1, 0]])
        out.append(cv2.warpAffine(big, m, (big.shape[1], big.shape[0]), borderMode=cv2.BORDER_REFLECT)[:, : size[1]])
    return np.stack(out)


def example_clips() -> dict:
    """The example clips of docs/num_view.md: 30 frames at 320 x 192, by name."""
    from rollingdepth.io.video_io import load_source

    first, second = panning_clip(1.0, 15, EXAMPLE_SIZE, seed=0), panning_clip(1.0, 15, EXAMPLE_SIZE, seed=1)
    return {
        "static (no motion)": panning_clip(0.0, 30, EXAMPLE_SIZE),
        "slow pan, 1 px per frame": panning_clip(1.0, 30, EXAMPLE_SIZE),
        "moderate pan, 4 px per frame": panning_clip(4.0, 30, EXAMPLE_SIZE),
        "fast pan, 17 px per frame": panning_clip(17.0, 30, EXAMPLE_SIZE),
        "slow pan with a cut after frame 15": np.concatenate([first, second]),
        "data/samples/synthetic_scene.mp4 (72 frames)": load_source(SAMPLE_CLIP).read(),
    }


def example_table() -> list[tuple[str, float, int, str]]:
    """(clip, motion score, auto num_view, reason) per example clip, 64 GB free, 768 x 432 fp16."""
    rows = []
    for name, frames in example_clips().items():
        n, info = choose_num_view(frames, torch.device("cpu"), LATENT_HW, torch.float16, free_bytes=64 * GB)
        rows.append((name, info["motion_score"], n, info["reason"].split(":")[0].split(" (")[0]))
    return rows


def _fast_info(free_gb: float) -> tuple[int, dict]:
    return choose_num_view(panning_clip(17.0), torch.device("cpu"), LATENT_HW, torch.float16,
                           free_bytes=int(free_gb * GB))


@pytest.mark.parametrize("step,expected", [(0.0, 2), (0.5, 2), (2.0, 3), (8.0, 4), (17.0, 4)])
def test_auto_choice_follows_motion(step, expected):
    clip = panning_clip(step)
    n, info = choose_num_view(clip, torch.device("cpu"), LATENT_HW, torch.float16, free_bytes=64 * GB)
    assert n == expected, info
    assert info["num_view"] == n and info["reason"]
    again, info2 = choose_num_view(clip, torch.device("cpu"), LATENT_HW, torch.float16, free_bytes=64 * GB)
    assert (again, info2) == (n, info)  # deterministic


def test_static_clip_gets_no_more_frames_than_fast_motion():
    cpu, free = torch.device("cpu"), 64 * GB
    n_static, static = choose_num_view(panning_clip(0.0, frames=30), cpu, LATENT_HW, torch.float16, free_bytes=free)
    n_fast, fast = choose_num_view(panning_clip(17.0, frames=30), cpu, LATENT_HW, torch.float16, free_bytes=free)
    assert n_static <= n_fast
    assert (n_static, n_fast) == (2, 4)
    assert static["reason"].startswith("static or slow motion") and "cheapest" in static["reason"]
    assert fast["reason"].startswith("fast motion") and "memory" not in fast["reason"]


def test_motion_score_orders_clips():
    static, slow, moderate, fast, faster = (motion_score(panning_clip(s)) for s in (0.0, 0.5, 2.0, 8.0, 17.0))
    assert static <= slow <= MOTION_SLOW < moderate < MOTION_FAST <= fast < faster


def test_fast_pans_beyond_the_optical_flow_range_still_read_as_fast():
    """DIS flow alone loses fine texture that moves ~10 % of the frame per step."""
    for step in (17.0, 32.0, 64.0):
        assert motion_score(panning_clip(step)) >= MOTION_FAST, step


def test_fast_motion_falls_back_to_3_then_2_with_little_free_memory():
    n, info = _fast_info(64)
    assert n == 4 and "memory" not in info["reason"]
    n, info = _fast_info(MIN_FREE_GB_FOR_4 - 2)  # the estimate fits, the guide's floor for 4 does not
    assert n == 3, info
    assert f"4 frames need at least {MIN_FREE_GB_FOR_4:g} GB free, 6.0 GB free, so 3" in info["reason"]
    n, info = _fast_info(1.5)  # 3 frames at 768 x 432 fp16 need ~0.9 GB, more than half of 1.5 GB
    assert n == 2, info
    assert info["reason"].count("memory:") == 2 and info["reason"].endswith("so 2")
    assert info["free_memory_gb"] == 1.5


def test_auto_never_exceeds_the_clip_length():
    n, info = choose_num_view(panning_clip(17.0, frames=3), torch.device("cpu"), LATENT_HW, torch.float16,
                              free_bytes=64 * GB)
    assert n == 3 and "the clip has 3 frames" in info["reason"]


def test_documented_example_scores_match_the_measurement():
    """docs/num_view.md lists the example clips' scores; they must be what the code measures."""
    text = (REPO / "docs" / "num_view.md").read_text()
    documented = {m[0]: (float(m[1]), int(m[2])) for m in re.findall(r"^\| (.+?) \| ([0-9.]+) \| ([234]) \|", text, re.M)}
    rows = example_table()
    assert set(documented) == {name for name, *_ in rows}
    for name, score, n, _ in rows:
        assert documented[name][1] == n, name
        assert documented[name][0] == pytest.approx(score, rel=0.1, abs=5e-4), name


def test_auto_in_pipeline_and_cli(tiny_pipe, tmp_path, capsys):
    from rollingdepth.frontends import run_video as cli

    from .test_run_video import write_clip

    clip = panning_clip(0.0, frames=6, size=(24, 32))
    out = tiny_pipe(clip, processing_res=0, dilations=[1], snippet_lengths="auto", generator=torch.Generator().manual_seed(0))
    assert out.settings["num_view_auto"]["num_view"] == out.settings["snippet_lengths"][0] == 2
    write_clip(tmp_path / "still.mp4", clip)
    with pytest.raises(SystemExit) as info:
        cli.main([str(tmp_path / "still.mp4"), "-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1",
                  "--snippet-lengths", "auto", "-o", str(tmp_path / "o")])
    printed = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 0
    assert "auto chose 2 (static or slow motion" in printed
    report = json.loads((tmp_path / "o" / "still_run.json").read_text())
    auto = report["settings"]["num_view_auto"]
    assert auto["motion_score"] <= MOTION_SLOW and auto["num_view"] == 2
    assert auto["reason"].startswith("static or slow motion")


def test_attention_levels_from_layer_names():
    assert attention_level("down_blocks.0.attentions.0.transformer_blocks.0.attn1", 4) == "fine"
    assert attention_level("down_blocks.1.attentions.0.transformer_blocks.0.attn1", 4) == "medium"
    assert attention_level("up_blocks.1.attentions.0.transformer_blocks.0.attn1", 4) == "coarse"
    assert attention_level("up_blocks.3.attentions.0.transformer_blocks.0.attn1", 4) == "fine"
    assert attention_level("mid_block.attentions.0.transformer_blocks.0.attn1", 4) == "coarse"


def test_span_equal_to_num_view_is_bit_identical(tiny_pipe, clip):
    frames = clip(6)
    kwargs = dict(processing_res=0, dilations=[1], snippet_lengths=[3])
    base = tiny_pipe(frames, generator=torch.Generator().manual_seed(0), **kwargs)
    same = tiny_pipe(frames, generator=torch.Generator().manual_seed(0), attn_span={"fine": 3, "coarse": 5}, **kwargs)
    np.testing.assert_array_equal(base.snippets[0], same.snippets[0])
    narrow = tiny_pipe(frames, generator=torch.Generator().manual_seed(0), attn_span={"fine": 2}, **kwargs)
    assert np.abs(narrow.snippets[0] - base.snippets[0]).max() > 1e-5
    assert narrow.settings["attn_span"] == {"fine": 2}


@pytest.mark.parametrize("span", [1, 2])
def test_frames_outside_the_span_do_not_influence_each_other(span):
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8, processor=CrossFrameAttnProcessor(level="fine"))
    n, hw = 4, 12
    x = torch.randn(n, hw, 32)  # one snippet of 4 frames
    base = attn(x, num_view=n, attn_span={"fine": span})
    x2 = x.clone()
    x2[3] += torch.randn(hw, 32)  # perturb the last frame
    out = attn(x2, num_view=n, attn_span={"fine": span})
    changed = [(out[i] - base[i]).abs().max().item() > 1e-6 for i in range(n)]
    # frame i sees frame 3 iff |i - 3| < span
    assert changed == [abs(i - 3) < span for i in range(n)]
    # other levels ignore the span
    other = Attention(query_dim=32, heads=4, dim_head=8, processor=CrossFrameAttnProcessor(level="coarse"))
    other.load_state_dict(attn.state_dict())
    torch.testing.assert_close(other(x, num_view=n, attn_span={"fine": span}), other(x, num_view=n))


def test_math_backend_equals_sdpa():
    torch.manual_seed(0)
    sdpa = Attention(query_dim=32, heads=4, dim_head=8, processor=CrossFrameAttnProcessor(backend="sdpa"))
    math = Attention(query_dim=32, heads=4, dim_head=8, processor=CrossFrameAttnProcessor(backend="math"))
    math.load_state_dict(sdpa.state_dict())
    x = torch.randn(6, 10, 32)
    torch.testing.assert_close(sdpa(x, num_view=3), math(x, num_view=3), atol=1e-5, rtol=0)


def test_out_of_memory_message_names_remedies(tmp_path, capsys, monkeypatch):
    from rollingdepth.frontends import run_video as cli
    from rollingdepth import RollingDepthPipeline

    from .test_run_video import write_clip

    write_clip(tmp_path / "a.mp4", panning_clip(1.0, frames=4, size=(24, 32)))

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(RollingDepthPipeline, "denoise_snippets", oom)  # out of memory even at 1 snippet per call
    with pytest.raises(SystemExit) as info:
        cli.main([str(tmp_path / "a.mp4"), "-c", str(TINY_CHECKPOINT), "--res", "32", "--dtype", "fp32", "-o", str(tmp_path / "o")])
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 1 and "Traceback" not in err
    assert "out of memory at 32x24, float32, num_view 3" in err
    assert "--res" in err and "--dtype bf16" in err and "--unet-batch-size 1" in err and "--snippet-lengths 2" in err


def test_compare_num_view_benchmark_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compare_num_view.py"), "-c", str(TINY_CHECKPOINT),
         "--num-views", "2", "3", "--backends", "sdpa", "--frames", "4", "--res", "32", "--dtype", "fp32",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "compare_num_view.json").read_text())
    assert [r["num_view"] for r in data["results"]] == [2, 3]
    row = data["results"][1]
    assert row["tokens_per_level"]["fine"] == 3 * row["tokens_per_frame"]["fine"]
    assert row["attention_matrix_mb"]["fine"] == pytest.approx(2.25 * data["results"][0]["attention_matrix_mb"]["fine"])
    assert row["by_backend"]["sdpa"]["seconds_per_frame"] > 0 and row["by_backend"]["sdpa"]["peak_memory_mb"] > 0
    assert (tmp_path / "compare_num_view.md").read_text().count("|") > 10


if __name__ == "__main__":
    print("| clip | motion score | auto num_view | why |")
    print("|---|---|---|---|")
    for clip_name, clip_score, clip_n, why in example_table():
        print(f"| {clip_name} | {clip_score:.4f} | {clip_n} | {why} |")
