"""Promises of the README and --help (rollingdepth/frontends/run_video.py) that no other test keeps: no resume after the input
changed, --work-dir, the accelerator options from the command line (a real torch.compile), the
original's option spellings, `accelerate launch`, and the `full` preset end to end."""

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from rollingdepth.frontends import run_video as cli

from .conftest import TINY_CHECKPOINT, held_run, make_clip, require, require_module, run_group, work_folders
from .test_run_video import write_clip

REPO = Path(__file__).resolve().parent.parent
SMALL = ["-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,3", "--dtype", "fp32", "--no-save-sbs",
         "--cmap", "Greys_r"]


def run_cli(args) -> int:
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    return info.value.code


def test_work_dir_and_no_resume_after_the_input_changed(tmp_path, capsys):
    """A run stopped (SIGTERM, held at its first UNet batch) keeps its work in --work-dir, not
    in the output folder. Once the input file changed, the same command refuses to resume
    with one line naming the input and --restart; --restart then runs it from the start, and
    the work folder goes once the outputs are complete."""
    clip = write_clip(tmp_path / "clip.mp4", make_clip(8, 24, 32))
    out, work = tmp_path / "out", tmp_path / "work"
    args = [clip, *SMALL, "--unet-batch-size", "2", "-o", out, "--work-dir", work]
    proc = held_run(args, {"stage": "snippets", "dilation": 1, "done": 2})
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    assert len(work_folders(work)) == 1 and not work_folders(out) and not list(out.glob("clip_*"))

    write_clip(clip, make_clip(8, 24, 32, seed=5))  # another video under the same name
    capsys.readouterr()
    assert run_cli([*args, "-q"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "Error:" in line]
    assert len(lines) == 1 and "input" in lines[0] and "--restart" in lines[0], err
    assert len(work_folders(work)) == 1  # nothing deleted silently

    assert run_cli([*args, "-q", "--restart"]) == 0
    report = json.loads((out / "clip_run.json").read_text())
    assert report["settings"]["work_dir"] == str(work) and not work_folders(work)
    assert report["counts"]["vae_encodes"] == 8  # every frame of the new video, from the start


def _inductor_can_build() -> bool:
    """What torch.compile's CPU backend (inductor) builds its kernels with: the C++ compiler it
    looks for and Python's headers."""
    import sysconfig

    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception:
        return False
    return (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()


def test_accelerator_options_from_the_command_line(tmp_path, capsys):
    """--compile (the real torch.compile: inductor on CPU, which builds C++ kernels),
    --channels-last and --device through run-video: the run reports them, dynamo compiled the
    UNet, the VAE encoder and the VAE decoder, and the depth is the plain run's. The suite's
    one torch.compile run (a minute of CPU on a clean cache): 3 frames of 16x16, one snippet."""
    require(_inductor_can_build(), "torch.compile on CPU needs a C++ compiler (g++) and Python's headers")
    import torch
    import torch._dynamo
    import torch._inductor.config
    from diffusers import UNet2DConditionModel
    from diffusers.models.autoencoders.vae import Decoder, Encoder
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

    def compiled(module_type) -> int:  # dynamo's cache entries for the module's forward
        return len(_debug_get_cache_entry_list(module_type.forward.__code__))

    clip = write_clip(tmp_path / "clip.mp4", make_clip(3, 16, 16))  # one snippet, the smallest latents
    assert run_cli([clip, *SMALL, "-d", "1", "-q", "-o", tmp_path / "plain"]) == 0
    torch._dynamo.reset()
    try:  # scalar C++ kernels: about half the compile time of vectorised ones
        with torch._inductor.config.patch({"cpp.vec_isa_ok": False, "compile_threads": 1}):
            code = run_cli([clip, *SMALL, "-d", "1", "-q", "--compile", "--channels-last", "--device", "cpu",
                            "-o", tmp_path / "fast"])
        assert code == 0, capsys.readouterr().err[-2000:]
        assert [compiled(t) > 0 for t in (UNet2DConditionModel, Encoder, Decoder)] == [True, True, True]
    finally:
        torch._dynamo.reset()
    report = json.loads((tmp_path / "fast" / "clip_run.json").read_text())
    s = report["settings"]
    assert (s["compile"], s["channels_last"], s["device"]) == (True, True, "cpu")
    np.testing.assert_allclose(np.load(tmp_path / "fast" / "clip_pred.npy"),
                               np.load(tmp_path / "plain" / "clip_pred.npy"), atol=1e-4, rtol=0)


def test_the_originals_spellings(tmp_path):
    """--color-maps, --data-type, --restore-resolution and --save-side-by-side (the original
    run_video.py's names) mean --cmap, --dtype, --restore-res and --save-sbs."""
    clip = write_clip(tmp_path / "clip.mp4", make_clip(6, 24, 32))
    args = [clip, "-c", TINY_CHECKPOINT, "--res", "16", "-d", "1,3", "--data-type", "fp32",
            "--color-maps", "Greys_r", "viridis", "--restore-resolution", "true", "--save-side-by-side", "false",
            "-q", "-o", tmp_path / "o"]
    assert run_cli(args) == 0
    report = json.loads((tmp_path / "o" / "clip_run.json").read_text())
    s = report["settings"]
    assert s["cmaps"] == ["Greys_r", "viridis"] and s["dtype"] == "float32"
    assert s["restore_res"] is True and s["save_sbs"] is False
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "clip_Greys_r.mp4", "clip_pred.npy", "clip_run.json", "clip_viridis.mp4"]
    assert np.load(tmp_path / "o" / "clip_pred.npy").shape == (6, 24, 32)  # the input's size, restored


def test_accelerate_launch_two_cpu_processes(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m rollingdepth` (the README's command,
    here without GPUs: accelerate starts the processes through torchrun all the same; with
    `--cpu` it would start one process) shares the videos between the two processes: each
    video is done once, completely, by one of them."""
    require_module("accelerate")
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        write_clip(clips / f"v{i}.mp4", make_clip(6, 16, 24, seed=i))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    out = tmp_path / "out"
    proc = run_group([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                      "-m", "rollingdepth", clips, *SMALL, "-q", "-o", out], 900, cwd=REPO, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    reports = {p.name: json.loads(p.read_text()) for p in out.glob("*_run.json")}
    assert sorted(reports) == ["v0_run.json", "v1_run.json", "v2_run.json"]
    for report in reports.values():
        assert report["frames"] == 6 and report["counts"]["vae_encodes"] == 6  # done once, by one process
        assert report["world_size"] == 2
    assert {r["rank"] for r in reports.values()} == {0, 1}  # both processes took a share
    assert not work_folders(out)


def test_full_preset_end_to_end(tmp_path):
    """-p full (three dilations, ten refinement steps) on a few small frames: the preset's
    settings are the ones used (capped to the clip), and the outputs are complete."""
    clip = write_clip(tmp_path / "clip.mp4", make_clip(8, 16, 24))
    assert run_cli([clip, "-p", "full", "-c", TINY_CHECKPOINT, "--res", "24", "--dtype", "fp32", "--cmap", "Greys_r",
                    "-q", "-o", tmp_path / "o"]) == 0
    report = json.loads((tmp_path / "o" / "clip_run.json").read_text())
    s = report["settings"]
    assert s["refine_step"] == 10 and len(s["refine_dilations"]) == 10 and set(s["snippet_lengths"]) == {3}
    assert s["dilations"][0] == 1 and max(s["dilations"]) < 10  # 10 and 25 capped for 8 frames
    assert report["counts"]["vae_encodes"] == 16  # the frames, then the co-aligned depth for refinement
    depth = np.load(tmp_path / "o" / "clip_pred.npy")
    assert depth.shape == (8, 16, 24) and np.isfinite(depth).all()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "clip_Greys_r.mp4", "clip_pred.npy", "clip_rgbd.mp4", "clip_run.json"]
