"""run-video's part around the method: work folders, bounded memory, accelerator options."""

import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rollingdepth.rollingdepth_pipeline import RollingDepthPipeline

from .conftest import TINY_CHECKPOINT, make_clip

REPO = Path(__file__).resolve().parent.parent


def _run_cli(args, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "rollingdepth", *map(str, args)], env=env, capture_output=True, text=True)


def _work_folders(folder: Path):
    return [p.name for p in folder.iterdir() if "-work-" in p.name or ".partial" in p.name]


def test_work_folder_removed_after_success_kept_for_resuming(tmp_path, capsys, monkeypatch):
    """Removed once the outputs are complete; after an error or Ctrl-C in the merge it stays
    (with its journal) and holds nothing partial in the output folder; an error before any
    checkpoint leaves no work folder at all."""
    from rollingdepth import cli, driver

    from .test_cli import write_clip

    write_clip(tmp_path / "a.mp4", make_clip(6))
    args = [str(tmp_path / "a.mp4"), "-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,2", "--dtype", "fp32", "-q"]
    seen = []
    original = driver.merge_pass

    def spy(*a, **k):
        seen.extend(p.name for p in (tmp_path / "ok").iterdir() if "-work-" in p.name)
        return original(*a, **k)

    monkeypatch.setattr(driver, "merge_pass", spy)
    with pytest.raises(SystemExit) as info:
        cli.main(args + ["-o", str(tmp_path / "ok")])
    assert info.value.code == 0 and seen  # a work folder existed during the run
    assert not _work_folders(tmp_path / "ok")

    for exc, code in ((RuntimeError("boom"), 1), (KeyboardInterrupt(), 130)):
        def fail(*a, _exc=exc, **k):
            raise _exc

        monkeypatch.setattr(driver, "merge_pass", fail)
        out_dir = tmp_path / f"fail{code}"
        with pytest.raises(SystemExit) as info:
            cli.main(args + ["-o", str(out_dir)])
        assert info.value.code == code
        [kept] = _work_folders(out_dir)
        assert (out_dir / kept / "journal.jsonl").exists() and not list(out_dir.glob("a_*"))

    def fail_early(*a, **k):
        raise RuntimeError("before any checkpoint")

    monkeypatch.setattr(driver, "encode_pass", fail_early)
    with pytest.raises(SystemExit) as info:
        cli.main(args + ["-o", str(tmp_path / "early")])
    assert info.value.code == 1 and not _work_folders(tmp_path / "early")


def test_thousand_frames_in_bounded_memory(tmp_path):
    """1,000 frames through run-video (tiny checkpoint, 24 x 32): peak RSS growth stays far
    below 0.5 MB per frame (scaled to this size it is a generous bound)."""
    from .test_cli import write_clip

    clip = tmp_path / "long.mp4"
    write_clip(clip, make_clip(1000, 24, 32), fps=25)
    script = (
        "import resource, sys, runpy; sys.argv = ['run-video'] + sys.argv[1:];\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "from rollingdepth.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    print('PEAK_KB', peak, 'CODE', e.code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, clip, "-c", TINY_CHECKPOINT, "--res", "0", "-d", "1,25",
                           "--dtype", "fp32", "--unet-batch-size", "16", "--max-vae-bs", "16", "--no-save-sbs",
                           "--cmap", "Greys_r", "-q", "-o", tmp_path / "o"],
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=1200)
    line = [l for l in proc.stdout.splitlines() if l.startswith("PEAK_KB")]
    assert line, proc.stderr[-2000:]
    peak_kb, code = int(line[0].split()[1]), int(line[0].split()[3])
    assert code == 0, proc.stderr[-2000:]
    depth = np.load(tmp_path / "o" / "long_pred.npy", mmap_mode="r")
    assert depth.shape == (1000, 24, 32)
    # the whole process (torch, diffusers, model, 1000 frames) under 1.5 GB; the frames'
    # share is bounded by 0.5 MB x 1000 = 500 MB with lots of room
    assert peak_kb / 1024 < 1500, peak_kb


def test_accelerator_options(monkeypatch):
    from rollingdepth import runner

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(type(module).__name__) or module)
    pipe = runner.load_pipeline(str(TINY_CHECKPOINT), "fp32", "cpu", compile=True, channels_last=True)
    assert compiled == ["UNet2DConditionModel", "Encoder", "Decoder"]
    frames = make_clip(4)
    plain = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT))
    a = pipe(frames, processing_res=0, dilations=[1], generator=torch.Generator().manual_seed(0))
    b = plain(frames, processing_res=0, dilations=[1], generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(a.depth, b.depth, atol=1e-4)  # channels-last: same numbers
