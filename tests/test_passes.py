"""The one implementation of the method: the same passes over an in-memory or an on-disk store."""

import json
import warnings

import numpy as np
import pytest
import torch

from rollingdepth.runtime import passes as driver
from rollingdepth import RollingDepthPipeline
from rollingdepth.method.settings import MethodSettings
from rollingdepth.method.snippets import snippet_indices
from rollingdepth.runtime.stores import DiskStore, MemoryStore, NpyFile

from .conftest import TINY_CHECKPOINT, make_clip


def run_on_disk(pipe, frames, workdir, keep_snippets=False, budget=None, **kwargs):
    settings = MethodSettings(**kwargs).validate()
    store = DiskStore(workdir, budget=budget)
    result = driver.run(pipe, iter(frames), store, settings, generator=torch.Generator().manual_seed(0),
                        num_frames_hint=len(frames), keep_snippets=keep_snippets)
    return np.asarray(result.depth[:]), result


def snippet_frames(num_frames, plan):
    return sum(snippet_indices(num_frames, n, d).size for d, n in plan)


@pytest.mark.parametrize("coalign", ["fast", "reference"])
@pytest.mark.parametrize("refine_step", [0, 2])
def test_disk_store_equals_memory(tiny_pipe, tmp_path, coalign, refine_step):
    frames = make_clip(21, 30, 44)
    kwargs = dict(processing_res=0, dilations=[1, 4], snippet_lengths=[3], coalign=coalign,
                  refine_step=refine_step, unet_batch_size=3, max_vae_bs=4)
    in_memory = tiny_pipe(frames, generator=torch.Generator().manual_seed(0), **kwargs)
    on_disk, result = run_on_disk(tiny_pipe, frames, tmp_path, **kwargs)
    np.testing.assert_allclose(on_disk, in_memory.depth, atol=1e-5, rtol=0)
    assert result.coalign_loss == pytest.approx(in_memory.coalign_loss, rel=1e-6)
    differs = {"store", "decoded_maps"}
    assert {k: v for k, v in result.settings.items() if k not in differs} == \
        {k: v for k, v in in_memory.settings.items() if k not in differs}
    assert (result.settings["store"], in_memory.settings["store"]) == ("disk", "memory")
    from rollingdepth.method.settings import method_fields

    assert set(method_fields()) <= set(result.settings)  # every method setting is reported, as the run used it


@pytest.mark.parametrize("refine_step", [0, 2])
def test_each_snippet_frame_decoded_once(tiny_pipe, tmp_path, refine_step):
    frames = make_clip(17)
    kwargs = dict(processing_res=0, dilations=[1, 3, 5], snippet_lengths=[3, 2, 3], refine_step=refine_step,
                  unet_batch_size=2, max_vae_bs=3)
    out = tiny_pipe(frames, generator=torch.Generator().manual_seed(0), **kwargs)
    _, result = run_on_disk(tiny_pipe, frames, tmp_path, **kwargs)
    plan = list(zip(out.settings["dilations"], out.settings["snippet_lengths"]))
    decodes = snippet_frames(17, plan) + (17 if refine_step else 0)
    encodes = 17 * (2 if refine_step else 1)
    for counts in (out.counts, result.counts.as_dict()):
        assert counts["vae_decodes"] == decodes
        assert counts["vae_encodes"] == encodes
        unet_snippets = sum(len(snippet_indices(17, n, d)) for d, n in plan)
        assert counts["unet_calls"] == sum(-(-len(snippet_indices(17, n, d)) // 2) for d, n in plan) + (
            sum(-(-len(snippet_indices(17, 3, d)) // 2) for d in out.settings["refine_dilations"]))
        assert counts["unet_frames"] >= unet_snippets


def test_no_room_for_maps_decodes_again_same_result(tiny_pipe, tmp_path):
    frames = make_clip(12)
    kwargs = dict(processing_res=0, dilations=[1, 3], snippet_lengths=[3], unet_batch_size=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept, a = run_on_disk(tiny_pipe, frames, tmp_path / "a", **kwargs)
    with pytest.warns(UserWarning, match="decoding every snippet frame again"):
        again, b = run_on_disk(tiny_pipe, frames, tmp_path / "b", budget=1000, **kwargs)
    np.testing.assert_allclose(again, kept, atol=1e-6, rtol=0)
    plan = list(zip(a.settings["dilations"], a.settings["snippet_lengths"]))
    assert a.counts.vae_decodes == snippet_frames(12, plan)
    assert b.counts.vae_decodes == 2 * snippet_frames(12, plan)
    assert (a.settings["decoded_maps"], b.settings["decoded_maps"]) == ("kept", "decoded again")
    kept_files = {p.name for p in (tmp_path / "a").iterdir()}
    again_files = {p.name for p in (tmp_path / "b").iterdir()}
    assert {"snippets_0.npy", "snippets_1.npy"} <= kept_files and not any("latents_" in n for n in kept_files)
    assert {"latents_0.npy", "latents_1.npy"} <= again_files and not any("snippets_" in n for n in again_files)


def test_disk_store_budget_from_free_space(tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    monkeypatch.setattr(store, "free_bytes", lambda: 5 << 30)
    assert store.keep_maps(3 << 30, output_bytes=1 << 30)  # 5 GiB free - 1 GiB output - 1 GiB margin
    with pytest.warns(UserWarning, match=r"need 3\.5 GiB .* 3\.0 GiB can be used"):
        assert not store.keep_maps(int(3.5 * 2**30), output_bytes=1 << 30)
    assert MemoryStore().keep_maps(1 << 60)
    assert store.maps_dtype(torch.float16) == np.float16 and store.maps_dtype(torch.float32) == np.float32


def test_kept_snippets_are_the_snippets_and_mixed_lengths(tiny_pipe, tmp_path):
    frames = make_clip(12)
    kwargs = dict(processing_res=0, dilations=[1, 3], snippet_lengths=[2, 3], unet_batch_size=2)
    in_memory = tiny_pipe(frames, generator=torch.Generator().manual_seed(0), **kwargs)
    depth, result = run_on_disk(tiny_pipe, frames, tmp_path, keep_snippets=True, budget=0, **kwargs)
    assert len(result.snippets) == 2
    for maps, snip in zip(result.snippets, in_memory.snippets):
        assert isinstance(maps, NpyFile)
        np.testing.assert_array_equal(np.load(maps.path), snip)
    np.testing.assert_allclose(depth, in_memory.depth, atol=1e-5)


def test_renormalise_in_chunks():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(70, 5, 6)).astype(np.float32)
    b = np.empty_like(a)
    lo, hi = driver.renormalise(a, b, MemoryStore(), chunk=8)
    assert (lo, hi) == (float(a.min()), float(a.max()))
    np.testing.assert_allclose(b, (a - a.min()) / (a.max() - a.min()) * 2 - 1, atol=1e-6)
    flat = np.full((3, 2, 2), 0.5, np.float32)
    out = np.ones_like(flat)
    driver.renormalise(flat, out, MemoryStore())
    assert not out.any()


def test_npy_file_rows(tmp_path):
    f = NpyFile(tmp_path / "a.npy", (4, 3, 2, 2), np.float16, row_ndim=2)
    data = np.arange(4 * 3 * 4, dtype=np.float16).reshape(12, 2, 2)
    f[0:12] = data
    np.testing.assert_array_equal(f.take([5, 6, 7, 0, 11]), data[[5, 6, 7, 0, 11]])
    f.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), data.reshape(4, 3, 2, 2))


def test_unet_and_vae_out_of_memory_back_off(tiny_pipe, tmp_path, monkeypatch):
    frames = make_clip(9)
    kwargs = dict(processing_res=0, dilations=[1, 2], snippet_lengths=[3], max_vae_bs=4)
    one = tiny_pipe(frames, generator=torch.Generator().manual_seed(0), unet_batch_size=1, **kwargs)
    original, original_decode = RollingDepthPipeline.denoise_snippets, RollingDepthPipeline.decode_depth
    calls = []

    def flaky(self, rgb, depth, t, n, attn_span=None):
        calls.append(rgb.shape[0] // n)
        if rgb.shape[0] > n:  # more than one snippet does not "fit"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return original(self, rgb, depth, t, n, attn_span)

    def flaky_decode(self, latents, size):
        if latents.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (VAE)")
        return original_decode(self, latents, size)

    monkeypatch.setattr(RollingDepthPipeline, "denoise_snippets", flaky)
    monkeypatch.setattr(RollingDepthPipeline, "decode_depth", flaky_decode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, result = run_on_disk(tiny_pipe, frames, tmp_path, unet_batch_size=4, **kwargs)
    assert calls[:3] == [4, 2, 1]  # halved down to one snippet per call, then kept there
    assert set(calls[3:]) == {1}
    assert len([w for w in caught if "out of memory" in str(w.message)]) == 1  # logged once
    # other batches, other float noise (~1e-6 in the snippets), amplified by co-alignment
    np.testing.assert_allclose(out, one.depth, atol=5e-5)
    plan = list(zip(result.settings["dilations"], result.settings["snippet_lengths"]))
    assert result.counts.vae_decodes == snippet_frames(9, plan)  # failed attempts are not counted


def test_run_video_reports_decodes(tmp_path, capsys):
    from rollingdepth.frontends import run_video as cli

    from .test_run_video import write_clip

    write_clip(tmp_path / "a.mp4", make_clip(10))
    with pytest.raises(SystemExit) as info:
        cli.main([str(tmp_path / "a.mp4"), "-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,3", "--dtype", "fp32",
                  "--refine-step", "1", "--no-save-sbs", "--cmap", "Greys_r", "-q", "-o", str(tmp_path / "o")])
    assert info.value.code == 0
    report = json.loads((tmp_path / "o" / "a_run.json").read_text())
    plan = list(zip(report["settings"]["dilations"], report["settings"]["snippet_lengths"]))
    assert report["counts"]["vae_decodes"] == snippet_frames(10, plan) + 10
    assert report["counts"]["vae_encodes"] == 20
    assert report["settings"]["decoded_maps"] == "kept" and report["settings"]["store"] == "disk"
