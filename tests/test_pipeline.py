import json

import numpy as np
import pytest
import torch

from rollingdepth.method.snippets import cap_dilation, plan_snippets, refine_dilations, snippet_indices

from .conftest import GOLDEN_A


def seed(s=0):
    return torch.Generator().manual_seed(s)


# ----------------------------------------------------------------------------- golden
@pytest.fixture(scope="module")
def golden_run(tiny_pipe):
    case = json.loads((GOLDEN_A / "case.json").read_text())
    frames = np.load(GOLDEN_A / "frames_uint8.npy")
    assert frames.shape == (case["frames"], case["height"], case["width"], 3)
    out = tiny_pipe(
        frames, processing_res=0, dilations=[1, 10], snippet_lengths=[3], refine_step=0,
        coalign="reference", max_vae_bs=4, unet_batch_size=1, generator=seed(0),
    )
    return out, np.load(GOLDEN_A / "reference.npz")


def test_golden_snippets(golden_run):
    out, ref = golden_run
    assert out.settings["dilations"] == [1, 10]
    assert [s.shape for s in out.snippets] == [(38, 3, 64, 96), (20, 3, 64, 96)]
    # the issue asks 1e-4; a faithful fp32 implementation gets about 1e-5 (the spec), so assert that
    np.testing.assert_allclose(out.snippets[0], ref["snippets_0"][:, :, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.snippets[1], ref["snippets_1"][:, :, 0], atol=1e-5, rtol=0)


def test_golden_depth(golden_run):
    """Tolerance 5e-3, not 1e-3: our snippets differ from the golden ones by ~4e-6 (float
    summation order of another diffusers/CPU kernel), and the reference optimiser (L1 loss,
    Adam's normalised steps, 2000 iterations) turns even 1e-6 of snippet noise into ~2e-3 of
    output difference: tests/test_coalign.py runs it on the golden snippets themselves and,
    on another CPU than the golden case's, lands 1.8e-3 from the golden depth (the authors' own
    code differs from its stored output by 1.5e-3 there). These snippets nearly agree, so this
    test cannot tell a merge that ignores the scales: tests/test_coalign_wiring.py does."""
    out, ref = golden_run
    assert out.depth.shape == out.depth_coaligned.shape == (40, 64, 96)
    assert out.depth.dtype == np.float32
    np.testing.assert_allclose(out.depth_coaligned, ref["depth_coaligned"][:, 0], atol=5e-3, rtol=0)
    np.testing.assert_allclose(out.depth, ref["depth_pred"][:, 0], atol=5e-3, rtol=0)
    assert out.depth_coaligned.min() == pytest.approx(-1) and out.depth_coaligned.max() == pytest.approx(1)
    assert set(out.timings) >= {"encode", "snippets", "decode", "coalign"}


# ----------------------------------------------------------------------------- behaviour
def test_batched_equals_one_at_a_time(tiny_pipe, clip):
    frames = clip(9)
    kwargs = dict(processing_res=0, dilations=[1, 3], snippet_lengths=[3], generator=None)
    one = tiny_pipe(frames, unet_batch_size=1, **{**kwargs, "generator": seed(1)})
    many = tiny_pipe(frames, unet_batch_size=5, **{**kwargs, "generator": seed(1)})
    for a, b in zip(one.snippets, many.snippets):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # the fast co-alignment turns the batches' float noise in the snippets (~1e-6) into up to
    # 1.4e-5 in the depth (measured with torch 2.13, diffusers 0.42)
    np.testing.assert_allclose(one.depth, many.depth, atol=5e-5, rtol=0)
    assert many.settings["unet_batch_size"] == [5, 5]


def test_same_seed_same_result_and_seed_matters(tiny_pipe, clip):
    frames = clip(6)
    a = tiny_pipe(frames, processing_res=0, dilations=[1], generator=seed(3))
    b = tiny_pipe(frames, processing_res=0, dilations=[1], generator=seed(3))
    c = tiny_pipe(frames, processing_res=0, dilations=[1], generator=seed(4))
    np.testing.assert_array_equal(a.depth, b.depth)
    assert np.abs(a.snippets[0] - c.snippets[0]).max() > 1e-4


def test_refinement_schedule_is_the_methods():
    # d_i = int((1 - i/R) * (d0 - 1)) + 1, evaluated in Python floats as the reference does:
    # for R = 10, d0 = 6, i = 8 gives int(0.19999999999999996 * 5) + 1 = 1, not 2
    assert refine_dilations(10, 6) == [6, 5, 5, 4, 4, 3, 3, 2, 1, 1]
    assert refine_dilations(3, 3) == [3, 2, 1]
    assert refine_dilations(4, 1) == [1, 1, 1, 1]
    assert refine_dilations(1, 6) == [6]


def _refine_by_the_spec(pipe, frames, coaligned, refine_step, d0, generator):
    """Step 12 of the method written out from the spec, one snippet per UNet call: the VAE's
    encoder and decoder and the scheduler used directly; the one-step UNet call is
    ``denoise_snippets`` (checked against the golden snippets)."""
    vae, sf = pipe.vae, 0.18215
    n, (h, w) = len(frames), coaligned.shape[1:]

    def encode(x):  # [B, 3, H, W] in [-1, 1] -> the mean half of the moments, scaled
        return vae.quant_conv(vae.encoder(x))[:, :4] * sf

    rgb = encode(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 * 2 - 1)  # [N, 4, h/8, w/8]
    noise = torch.randn((1, *rgb.shape[1:]), generator=generator)  # step 7: the one initial noise
    depth = torch.from_numpy(coaligned).float()[:, None].repeat(1, 3, 1, 1)  # [N, 3, H, W]
    pipe.scheduler.set_timesteps(2 * refine_step)
    timesteps = pipe.scheduler.timesteps[refine_step:]
    latents = pipe.scheduler.add_noise(encode(depth), noise.repeat(n, 1, 1, 1), timesteps[:1])
    for i, t in enumerate(timesteps):
        d = int((1 - i / refine_step) * (d0 - 1)) + 1
        total, count = torch.zeros_like(latents), torch.zeros(n)
        for start in range(0, n - 2 * d):  # snippets of 3 frames, dilation d, stride 1
            ids = [start, start + d, start + 2 * d]
            total[ids] += pipe.denoise_snippets(rgb[ids], latents[ids], t, 3)
            count[ids] += 1
        latents = total / count[:, None, None, None]
    out = vae.decoder(vae.post_quant_conv(latents / sf)).mean(dim=1)  # [N, H, W]
    return out[:, :h, :w].numpy()


def test_refinement_matches_the_method_written_out(tiny_pipe, clip):
    frames = clip(12)
    base = tiny_pipe(frames, processing_res=0, dilations=[1, 2], generator=seed(0))
    refined = tiny_pipe(frames, processing_res=0, dilations=[1, 2], refine_step=3,
                        refine_start_dilation=3, generator=seed(0))
    np.testing.assert_allclose(base.depth_coaligned, refined.depth_coaligned, atol=1e-6)
    assert refined.settings["refine_dilations"] == [3, 2, 1]
    with torch.no_grad():
        expected = _refine_by_the_spec(tiny_pipe, frames, base.depth_coaligned, 3, 3, seed(0))
    # the refined prediction is step 12 applied to the co-aligned depth, not merely different from it
    assert np.abs(expected - base.depth).max() > 1e-2
    np.testing.assert_allclose(refined.depth, expected, atol=2e-5)


def test_refinement_start_dilation_is_capped(tiny_pipe, clip):
    refined = tiny_pipe(clip(8), processing_res=0, dilations=[1, 2], refine_step=2,
                        refine_start_dilation=6, generator=seed(0))
    # start dilation 6 is capped to floor(8/3) - 1 = 1 on 8 frames
    assert refined.settings["refine_start_dilation"] == 1
    assert refined.settings["refine_dilations"] == [1, 1]
    assert "refine" in refined.timings and np.isfinite(refined.depth).all()


def test_mixed_snippet_lengths(tiny_pipe, clip):
    frames = clip(12)
    out = tiny_pipe(frames, processing_res=0, dilations=[1, 3], snippet_lengths=[2, 3], generator=seed(0))
    assert out.settings["snippet_lengths"] == [2, 3]
    assert [s.shape[:2] for s in out.snippets] == [(11, 2), (6, 3)]
    assert out.depth.shape == (12, 24, 32)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_short_videos(tiny_pipe, clip, num_frames):
    out = tiny_pipe(clip(num_frames), processing_res=0, dilations=[1, 25], snippet_lengths=[3],
                    refine_step=1, generator=seed(0))
    assert out.depth.shape == (num_frames, 24, 32)
    assert np.isfinite(out.depth).all() and np.isfinite(out.depth_coaligned).all()
    n = min(3, num_frames)
    # both dilations cap to 1 and are used once
    assert out.settings["dilations"] == [1]
    assert out.settings["snippet_lengths"] == [n]
    assert out.snippets[0].shape == (num_frames - n + 1, n, 24, 32)


def test_single_frame_is_single_image_inference(tiny_pipe, clip):
    frames = clip(1)
    out = tiny_pipe(frames, processing_res=0, dilations=[1], generator=seed(0))
    # One frame, one snippet: co-alignment keeps it, re-normalisation maps it to [-1, 1].
    snippet = out.snippets[0][0, 0]
    expected = (snippet - snippet.min()) / (snippet.max() - snippet.min()) * 2 - 1
    np.testing.assert_allclose(out.depth[0], expected, atol=1e-5)


def test_odd_size_is_padded_and_cropped(tiny_pipe):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(4, 51, 71, 3), dtype=np.uint8)
    out = tiny_pipe(frames, processing_res=0, dilations=[1], generator=seed(0))
    assert out.depth.shape == (4, 51, 71)
    assert out.snippets[0].shape[-2:] == (51, 71)
    out = tiny_pipe(frames, processing_res=50, dilations=[1], generator=seed(0))
    assert out.depth.shape == (4, 35, 50)  # int(51 * 50/71) = 35, floored
    assert out.settings["processing_size"] == [35, 50]


def test_torch_input_equals_numpy_input(tiny_pipe, clip):
    frames = clip(4)
    a = tiny_pipe(frames, processing_res=0, dilations=[1], generator=seed(0))
    b = tiny_pipe(torch.from_numpy(frames), processing_res=0, dilations=[1], generator=seed(0))
    np.testing.assert_array_equal(a.depth, b.depth)


def test_bf16_runs(clip):
    from rollingdepth import RollingDepthPipeline

    from .conftest import TINY_CHECKPOINT

    pipe = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT), torch_dtype=torch.bfloat16)
    out = pipe(clip(4), processing_res=0, dilations=[1], generator=seed(0))
    assert out.settings["dtype"] == "bfloat16"
    assert np.isfinite(out.depth).all()


def test_callback_reports_stages(tiny_pipe, clip):
    seen = {}
    tiny_pipe(clip(5), processing_res=0, dilations=[1], generator=seed(0),
              callback=lambda stage, done, total: seen.__setitem__(stage, (done, total)))
    assert seen["encode"] == (5, 5)
    assert seen["snippets d=1"] == (3, 3)
    assert seen["coalign"] == (1, 1)


def test_a_raising_callback_stops_the_run_within_one_batch(tiny_pipe, clip, monkeypatch):
    """The callback is called between every two UNet batches, inside each refinement step too,
    so a callback that raises (the web page's Cancel) stops the run after at most one batch."""
    calls = []
    original = type(tiny_pipe).denoise_snippets
    monkeypatch.setattr(type(tiny_pipe), "denoise_snippets", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    seen = []  # (stage, done, UNet batches so far) at each report

    class Stop(Exception):
        pass

    def callback(stage, done, total):
        seen.append((stage, done, len(calls)))
        if seen.count(("refine", 1, len(calls) - 1)) and ("refine", 1) == (stage, done):
            raise Stop  # inside the second step, after its first batch

    with pytest.raises(Stop):
        tiny_pipe(clip(10), processing_res=0, dilations=[1], refine_step=2, unet_batch_size=1, generator=seed(0),
                  callback=callback)
    refine = [(done, n) for stage, done, n in seen if stage == "refine"]
    second = [n for done, n in refine if done == 1]
    assert {done for done, _ in refine} == {0, 1} and second[-1] == second[0] + 1, refine  # one batch into step 2
    counts = [n for _, _, n in seen]
    assert max(b - a for a, b in zip(counts, counts[1:])) <= 1, seen  # never more than one batch unreported
    assert len(calls) == counts[-1]  # nothing ran after the raise
    assert sum(1 for done, _ in refine if done == 0) > 2  # the first step reported between its batches


BAD = [
    (dict(dilations=[2, 5]), "dilations"),
    (dict(dilations=[1, 0]), "dilations"),
    (dict(dilations=[1, -1]), "dilations"),
    (dict(dilations=[]), "dilations"),
    (dict(snippet_lengths=[0]), "snippet_lengths"),
    (dict(snippet_lengths=[100]), "snippet_lengths"),
    (dict(snippet_lengths=[3, 3, 3]), "snippet_lengths"),
    (dict(processing_res=-1), "processing_res"),
    (dict(refine_step=-1), "refine_step"),
    (dict(refine_step=501), "refine_step"),
    (dict(refine_snippet_len=0), "refine_snippet_len"),
    (dict(refine_start_dilation=0), "refine_start_dilation"),
    (dict(coalign="slow"), "coalign"),
    (dict(max_vae_bs=0), "max_vae_bs"),
    (dict(unet_batch_size=0), "unet_batch_size"),
    (dict(dilations=[1, 25], cap_dilation=False), "dilations"),
]


@pytest.mark.parametrize("kwargs,name", BAD)
def test_bad_arguments_name_the_parameter(tiny_pipe, clip, kwargs, name):
    with pytest.raises(ValueError, match=name):
        tiny_pipe(clip(6), **{"processing_res": 0, **kwargs})


@pytest.mark.parametrize(
    "frames,what",
    [
        (np.zeros((3, 8, 8), np.uint8), "frames"),
        (np.zeros((3, 8, 8, 4), np.uint8), "frames"),
        (np.zeros((3, 8, 8, 3), np.float32), "frames"),
        (np.zeros((0, 8, 8, 3), np.uint8), "frames"),
        ([[1, 2, 3]], "frames"),
    ],
)
def test_bad_frames(tiny_pipe, frames, what):
    with pytest.raises(ValueError, match=what):
        tiny_pipe(frames, processing_res=0)


# ----------------------------------------------------------------------------- snippets
def test_cap_dilation_never_zero():
    assert cap_dilation(25, 3, 250) == 25
    assert cap_dilation(25, 3, 40) == 12  # floor(40/3) - 1
    assert cap_dilation(25, 3, 5) == 1
    assert cap_dilation(10, 3, 1) == 1


def test_snippet_indices():
    idx = snippet_indices(10, 3, 4)
    assert idx.tolist() == [[0, 4, 8], [1, 5, 9]]
    with pytest.raises(ValueError):
        snippet_indices(5, 3, 4)


def test_plan_dedupes_after_capping():
    assert plan_snippets(6, [1, 10, 25], [3, 3, 3], cap=True) == [(1, 3)]
    assert plan_snippets(2, [1], [3], cap=True) == [(1, 2)]
    assert plan_snippets(100, [1, 10, 25], [2, 3, 3], cap=True) == [(1, 2), (10, 3), (25, 3)]


def test_refine_schedule():
    # i = 8: (1 - 0.8) * 5 is 0.999... in floating point, as in the reference: 1, not 2
    assert refine_dilations(10, 6) == [6, 5, 5, 4, 4, 3, 3, 2, 1, 1]
    assert refine_dilations(1, 6) == [6]
