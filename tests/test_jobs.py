"""The jobs API (``rollingdepth.runtime.jobs``): ``--skip-existing`` (``earlier_run``), which changed settings
predict a video again, from the declarations; one model loader."""

from __future__ import annotations

import pytest

from rollingdepth.frontends import run_video as cli
from rollingdepth.option_spec import Affects, affecting
from rollingdepth.runtime.jobs import earlier_run
from rollingdepth.runtime.run_config import RunConfig, option_name, prediction_settings, skip_existing_compared

from .conftest import TINY_CHECKPOINT, make_clip
from .test_cli import write_clip

BASE = dict(checkpoint=str(TINY_CHECKPOINT), processing_res=32, dtype="fp32", dilations=[1, 4], shots="none")
# another valid value of each setting (a setting missing here fails the tests: give it one)
OTHER = {
    "processing_res": 24, "dilations": [1, 2], "cap_dilation": False, "snippet_lengths": [2], "refine_step": 1,
    "refine_snippet_len": 2, "refine_start_dilation": 3, "coalign": "reference", "attn_span": {"fine": 2},
    "checkpoint": "another/checkpoint", "dtype": "bf16", "seed": 1, "start_frame": 1, "max_frames": 5,
    "shots": "auto", "segment_frames": 500,
    "output_fps": 10.0, "restore_res": True, "audio": False, "depth_out": "depth", "depth_range": [1.0, 10.0],
    "save_ply": 2, "fov": 50.0, "focal": 30.0, "ply_stride": 3, "stereo_strength": 4.0, "convergence": 1.0,
    "device": "cpu", "max_vae_bs": 2, "unet_batch_size": 1, "compile": True, "channels_last": True, "tf32": False,
    "work_dir": "elsewhere", "resume": False, "strict": True,
}
DEPTH = {"depth_out": "depth", "depth_range": [1.0, 10.0]}
WITH = {"depth_out": DEPTH, "depth_range": DEPTH, "save_ply": DEPTH}  # what another value needs


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A finished run of a 12-frame clip with :data:`BASE` settings: (output folder, its stem)."""
    folder = tmp_path_factory.mktemp("earlier")
    clip = write_clip(folder / "clip.mp4", make_clip(12, 24, 32, seed=3))
    args = [clip, "-c", TINY_CHECKPOINT, "--res", "32", "--dtype", "fp32", "-d", "1,4", "--shots", "none", "-q",
            "-o", folder / "out"]
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    assert info.value.code == 0
    return folder / "out", "clip"


def _changed(name: str, tmp_path) -> RunConfig:
    if name == "depth_points":
        (tmp_path / "points.csv").write_text("0,1,1,2.5\n0,5,5,4\n")
        value = str(tmp_path / "points.csv")  # as the command line gives it
    else:
        value = OTHER[name]
    return RunConfig.build("fast", {**BASE, name: value, **WITH.get(name, {})})


def test_the_same_settings_skip(earlier):
    assert earlier_run(*earlier, RunConfig.build("fast", BASE)) == (True, None)


@pytest.mark.parametrize("name", prediction_settings())
def test_a_changed_prediction_setting_predicts_again(earlier, name, tmp_path):
    skip, note = earlier_run(*earlier, _changed(name, tmp_path))
    assert not skip and note is not None and f"{option_name(name)} " in note, note


@pytest.mark.parametrize("name", [n for n in skip_existing_compared(planned=False) if n not in prediction_settings()])
def test_a_changed_output_setting_predicts_again(earlier, name, tmp_path):
    skip, note = earlier_run(*earlier, _changed(name, tmp_path))
    assert not skip, name  # with a note naming it, or (point clouds turned on) as its outputs are not complete
    assert note is None or f"{option_name(name)} " in note, note


@pytest.mark.parametrize("name", affecting(RunConfig, Affects.COMPUTATION, Affects.RUN))
def test_a_setting_that_changes_neither_prediction_nor_outputs_keeps_them(earlier, name, tmp_path):
    assert earlier_run(*earlier, _changed(name, tmp_path)) == (True, None), name


def test_fewer_output_files_keep_them(earlier):
    from rollingdepth.runtime.run_config import run_options

    off = {name: [] if run_options()[name].list_form else False  # a list of files (stereo layouts): none
           for name in affecting(RunConfig, Affects.FILES) if name != "cmaps"}
    assert earlier_run(*earlier, RunConfig.build("fast", {**BASE, **off, "cmaps": ["Greys_r"]})) == (True, None)


def test_one_loader_for_every_front_end(monkeypatch):
    """``load_model``: run-video's and eval-depth's (on their rank's device) and the page's (``cfg.device``),
    through ``runtime.loading`` as it is at call time, its progress bar off."""
    from rollingdepth.runtime import loading
    from rollingdepth.runtime.distributed import DistContext
    from rollingdepth.runtime.jobs import load_model

    class Pipe:
        bar = None

        def set_progress_bar_config(self, **kwargs):
            self.bar = kwargs

    calls = []
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: calls.append((a, k)) or Pipe())
    cfg = RunConfig.build("fast", {**BASE, "device": "cpu", "channels_last": True})
    assert load_model(cfg).bar == {"disable": True} and load_model(cfg, DistContext()).bar == {"disable": True}
    assert calls[0] == calls[1] == ((str(TINY_CHECKPOINT), "fp32", "cpu"),
                                    {"compile": False, "channels_last": True, "tf32": True})
