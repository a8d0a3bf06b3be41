"""The time estimate said before a run: FLOPs counted on the meta device, measured throughput."""

import json

import numpy as np
import pytest
import torch

from rollingdepth.frontends import run_video as cli
from rollingdepth.runtime.estimate import Estimate, cache_file, estimate_run, format_duration, unit_flops
from rollingdepth.method.settings import MethodSettings
from rollingdepth.runtime.plan import Plan

from .conftest import TINY_CHECKPOINT, make_clip
from .test_run_video import write_clip


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_meta_flops_equal_the_real_models(tiny_pipe):
    from torch.utils.flop_counter import FlopCounterMode

    size = (32, 48)
    units = unit_flops(tiny_pipe, size, 3)
    frames = torch.zeros((3, *size, 3), dtype=torch.uint8)
    latents = tiny_pipe.encode_frames(frames, size)
    tiny_pipe.scheduler.set_timesteps(1)
    t = tiny_pipe.scheduler.timesteps[0]
    real = {}
    # attention through the math backend, whose matmuls the counter sees (as on the meta device)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name, fn in (("encode", lambda: tiny_pipe.encode_frames(frames[:1], size)),
                     ("decode", lambda: tiny_pipe.decode_depth(latents[:1], size)),
                     ("unet3", lambda: tiny_pipe.denoise_snippets(latents, latents, t, 3))):
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fn()
        real[name] = counter.get_total_flops()
    for name in real:
        assert units[name] == pytest.approx(real[name], rel=1e-3), name
    # cross-frame attention: a snippet of 3 costs more than 3 single frames
    assert units["unet3"] > 3 * unit_flops(tiny_pipe, size, 1)["unet1"]
    # twice the edge: four times the convolutions, sixteen times the mid-block attention
    assert 4 * units["decode"] < unit_flops(tiny_pipe, (64, 96), 3)["decode"] < 6 * units["decode"]


def test_estimate_counts_the_plan(tiny_pipe):
    base = Estimate(tiny_pipe, 20, (30, 44), MethodSettings(processing_res=0, dilations=[1, 4]).validate())
    refined = Estimate(tiny_pipe, 20, (30, 44),
                       MethodSettings(processing_res=0, dilations=[1, 4], refine_step=2).validate())
    longer = Estimate(tiny_pipe, 40, (30, 44), MethodSettings(processing_res=0, dilations=[1, 4]).validate())
    assert 0 < base.seconds < refined.seconds and base.flops < refined.flops
    u = unit_flops(tiny_pipe, (30, 44), 3)  # 20 frames: 18 + 12 snippets; 40 frames: 38 + 32
    assert base.flops == 20 * u["encode"] + 30 * 3 * u["decode"] + 30 * u["unet3"]
    assert longer.flops == 40 * u["encode"] + 70 * 3 * u["decode"] + 70 * u["unet3"]
    assert json.loads(cache_file().read_text())  # the measured throughput is kept


def test_estimate_line_names_a_lower_res_on_cpu(tiny_pipe):
    line, seconds = estimate_run(tiny_pipe, [(72, (192, 320))], MethodSettings(processing_res=768).validate())
    assert line.startswith("Estimated ") and "on cpu (fp32) for 72 frames at 768x460" in line
    assert "--res 384 would take about" in line and seconds > 0


def test_a_long_estimate_names_the_resolution_of_a_quick_first_look(tiny_pipe):
    """On a CPU, an estimate over LONG_S names the highest of QUICK_RES that takes about a
    minute (QUICK_S), and its time: the figures are the estimate's own, at that resolution."""
    import re

    from rollingdepth.runtime import estimate

    settings = MethodSettings(processing_res=768).validate()
    line, seconds = estimate_run(tiny_pipe, [(72, (192, 320))], settings)
    whole = Estimate(tiny_pipe, 72, (192, 320), settings)
    assert seconds == pytest.approx(whole.seconds) and seconds > estimate.LONG_S  # 768 on the tiny VAE (2x): hours
    found = re.search(r"for a quick first look, --res (\d+) takes about ([^;.]+)", line)
    assert found, line
    res = int(found.group(1))
    assert res in estimate.QUICK_RES and res < 384
    assert found.group(2) == format_duration(whole.at_res(res))
    higher = [r for r in estimate.QUICK_RES if res < r < 768]
    assert whole.at_res(res) <= estimate.QUICK_S or res == estimate.QUICK_RES[-1]
    assert all(whole.at_res(r) > estimate.QUICK_S for r in higher)  # the highest that is quick
    short, _ = estimate_run(tiny_pipe, [(4, (24, 32))], MethodSettings(processing_res=32).validate())
    assert "quick first look" not in short  # a short estimate names none


def test_format_duration():
    assert [format_duration(s) for s in (0.2, 42, 61, 3599, 3900, 7 * 3600 + 5 * 60)] == \
        ["1 s", "42 s", "1 min", "59 min", "1 h 05 min", "7 h 05 min"]


def test_run_video_says_the_estimate_and_it_is_the_model(tmp_path, capsys, tiny_pipe, monkeypatch):
    """The line comes before the first video; run.json records the estimate next to the
    measured time, and the estimate is the documented model: for each unit of work the run
    did (its counts), the unit's FLOPs over the throughput measured and cached for this
    machine, summed. Machine speed enters only through that measured throughput."""
    from rollingdepth.runtime import estimate

    monkeypatch.setattr(estimate, "CORRECT_MIN_S", float("inf"))  # the cache as measured, whatever the run took
    clip = write_clip(tmp_path / "clip.mp4", make_clip(24, 48, 64))
    with pytest.raises(SystemExit) as info:
        cli.main([str(clip), "-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,5", "--dtype", "fp32",
                  "--no-save-sbs", "--cmap", "Greys_r", "--progress", "lines", "-o", str(tmp_path / "o")])
    assert info.value.code == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("Estimated ")]
    started = [i for i, line in enumerate(lines) if "clip.mp4: started" in line]
    assert said and started and said[0] < started[0], err
    assert "for 24 frames at 64x48" in lines[said[0]]
    report = json.loads((tmp_path / "o" / "clip_run.json").read_text())
    [rates] = json.loads(cache_file().read_text()).values()  # FLOP/s per unit, measured once here
    flops = unit_flops(tiny_pipe, (48, 64), 3)
    counts = report["counts"]  # 24 frames; 22 + 14 snippets of 3 frames, each frame decoded once
    assert (counts["vae_encodes"], counts["vae_decodes"], counts["unet_frames"]) == (24, 108, 108)
    work = {"encode": counts["vae_encodes"], "decode": counts["vae_decodes"], "unet3": counts["unet_frames"] // 3}
    model = sum(count * flops[unit] / rates[unit] for unit, count in work.items())
    assert report["estimate_s"] == pytest.approx(model, abs=1e-3)  # run.json keeps 3 decimals
    assert report["seconds"] > 0 and np.load(tmp_path / "o" / "clip_pred.npy").shape == (24, 48, 64)


def _scale_cache(factor: float) -> None:
    """Every cached throughput times ``factor`` (1/8: as if measured while the machine was busy)."""
    cached = json.loads(cache_file().read_text())
    cache_file().write_text(json.dumps({k: {u: r * factor for u, r in v.items()} for k, v in cached.items()}))


def test_a_run_far_from_its_estimate_corrects_the_cached_throughput(tiny_pipe, monkeypatch):
    """A throughput measured while the machine was busy (8x too low) makes estimates 8x too
    high until a run measures otherwise: then the cache is scaled by estimated / measured and
    the next estimate is the run's. Within CORRECT_FACTOR, or for a short run, nothing changes."""
    from rollingdepth.runtime import estimate
    from rollingdepth.runtime.model_steps import WorkCounts

    monkeypatch.setattr(estimate, "CORRECT_MIN_S", 0.0)
    settings = MethodSettings(processing_res=0, dilations=[1, 4], snippet_lengths=[3]).validate()
    true = Estimate(tiny_pipe, 20, (30, 44), settings)  # the throughput as measured on a quiet machine
    _scale_cache(1 / 8)
    busy = Estimate(tiny_pipe, 20, (30, 44), settings)
    assert busy.seconds == pytest.approx(8 * true.seconds)
    work = Plan.build(settings, 20).work()  # what a run of it counts; it took the true estimate's time
    counts = WorkCounts(vae_encodes=work["encode"], vae_decodes=work["decode"], unet_frames=3 * work["unet3"])
    timings = {"encode": 0.2 * true.seconds, "snippets": 0.7 * true.seconds, "decode": 0.1 * true.seconds}
    before = cache_file().read_text()
    monkeypatch.setattr(estimate, "CORRECT_MIN_S", 2 * true.seconds)  # a short run corrects nothing
    assert estimate.correct_throughput(tiny_pipe, busy.size, settings, counts, timings, [3]) is None
    monkeypatch.setattr(estimate, "CORRECT_MIN_S", 0.0)
    near = {k: v * 5 for k, v in timings.items()}  # 8 / 5 = 1.6x: within CORRECT_FACTOR
    assert estimate.correct_throughput(tiny_pipe, busy.size, settings, counts, near, [3]) is None
    assert cache_file().read_text() == before
    ratio = estimate.correct_throughput(tiny_pipe, busy.size, settings, counts, timings, [3])
    assert ratio == pytest.approx(8)
    assert Estimate(tiny_pipe, 20, (30, 44), settings).seconds == pytest.approx(true.seconds)
    slow = {k: v * 4 for k, v in timings.items()}  # later busier by 4x: corrected the other way
    assert estimate.correct_throughput(tiny_pipe, busy.size, settings, counts, slow, [3]) == pytest.approx(1 / 4)
    assert Estimate(tiny_pipe, 20, (30, 44), settings).seconds == pytest.approx(4 * true.seconds)


def test_run_video_corrects_an_estimate_far_off(tmp_path, capsys, tiny_pipe, monkeypatch):
    """run-video after a calibration far too slow: the run's own timings update the cache, and
    the next estimate is within CORRECT_FACTOR of what the run's model stages took."""
    from rollingdepth.runtime import estimate

    monkeypatch.setattr(estimate, "CORRECT_MIN_S", 0.0)
    clip = write_clip(tmp_path / "clip.mp4", make_clip(24, 48, 64))
    settings = MethodSettings(processing_res=0, dilations=[1, 5]).validate()
    Estimate(tiny_pipe, 24, (48, 64), settings)  # measured and cached
    _scale_cache(1 / 64)  # far too slow, whatever this machine's load
    with pytest.raises(SystemExit) as info:
        cli.main([str(clip), "-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,5", "--dtype", "fp32",
                  "--no-save-sbs", "--cmap", "Greys_r", "-o", str(tmp_path / "o")])
    assert info.value.code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "clip_run.json").read_text())
    took = sum(report["timings"].get(k, 0.0) for k in ("encode", "snippets", "decode", "refine"))
    assert report["estimate_s"] > estimate.CORRECT_FACTOR * took  # estimated with the slow cache
    after = Estimate(tiny_pipe, 24, (48, 64), settings).seconds
    assert took / estimate.CORRECT_FACTOR <= after <= took * estimate.CORRECT_FACTOR
