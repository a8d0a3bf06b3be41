"""The jobs API (``rollingdepth.runtime.jobs``): ``--skip-existing`` (``earlier_run``), which changed settings
predict a video again, from the declarations, an output format's own settings only where the new run writes it;
one model loader."""

from __future__ import annotations

import pytest

from rollingdepth.frontends import run_video as cli
from rollingdepth.io.output_formats import output_formats
from rollingdepth.option_spec import Affects, affecting
from rollingdepth.runtime.jobs import earlier_run
from rollingdepth.runtime.run_config import RunConfig, option_name, prediction_settings, skip_existing_compared

from .conftest import TINY_CHECKPOINT, make_clip
from .test_run_video import write_clip

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
# the value that turns on each output format with further settings (a format missing here fails the tests: give it one)
ON = {"save_ply": 1, "save_stereo": ["half-sbs"]}


def _owner(name: str):
    """The output format of which ``name`` is a further setting, else None."""
    return next((f for f in output_formats() if name in (m[0] for m in f.more)), None)


def _turned_on(fmt) -> dict:
    """The settings that turn ``fmt`` on, with what it needs."""
    return {fmt.setting: ON[fmt.setting], **WITH.get(fmt.setting, {})}


FURTHER = [m[0] for f in output_formats() for m in f.more]  # every format's further settings
FORMATS_ON = dict(kv for f in output_formats() if f.more for kv in _turned_on(f).items())  # each of those formats on


def _but(name: str) -> dict:
    """:data:`FORMATS_ON` with the format of the further setting ``name`` off (what it needed still given)."""
    return {**BASE, **{k: v for k, v in FORMATS_ON.items() if k != _owner(name).setting}}


def _args(values: dict) -> list[str]:
    """Settings as run-video's options."""
    return [text for name, value in values.items()
            for text in (option_name(name), ",".join(map(str, value)) if isinstance(value, list) else str(value))]


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


@pytest.fixture(scope="module")
def earlier_formats(tmp_path_factory):
    """The same run with every output format that has further settings turned on (:data:`FORMATS_ON`)."""
    folder = tmp_path_factory.mktemp("earlier_formats")
    clip = write_clip(folder / "clip.mp4", make_clip(12, 24, 32, seed=3))
    with pytest.raises(SystemExit) as info:
        cli.main([str(clip), *_args({**BASE, **FORMATS_ON}), "-q", "-o", str(folder / "out")])
    assert info.value.code == 0
    return folder / "out", "clip"


def _changed(name: str, tmp_path, base: dict = BASE) -> RunConfig:
    if name == "depth_points":
        (tmp_path / "points.csv").write_text("0,1,1,2.5\n0,5,5,4\n")
        value = str(tmp_path / "points.csv")  # as the command line gives it
    else:
        value = OTHER[name]
    return RunConfig.build("fast", {**base, name: value, **WITH.get(name, {})})


def test_the_same_settings_skip(earlier):
    assert earlier_run(*earlier, RunConfig.build("fast", BASE)) == (True, None)


@pytest.mark.parametrize("name", prediction_settings())
def test_a_changed_prediction_setting_predicts_again(earlier, name, tmp_path):
    skip, note = earlier_run(*earlier, _changed(name, tmp_path))
    assert not skip and note is not None and f"{option_name(name)} " in note, note


@pytest.mark.parametrize("name", [n for n in skip_existing_compared(planned=False) if n not in prediction_settings()])
def test_a_changed_output_setting_predicts_again(request, name, tmp_path):
    """A format's further setting is changed with its format on, against a run that wrote it."""
    further = _owner(name) is not None
    earlier = request.getfixturevalue("earlier_formats" if further else "earlier")
    skip, note = earlier_run(*earlier, _changed(name, tmp_path, {**BASE, **FORMATS_ON} if further else BASE))
    assert not skip, name  # with a note naming it, or (point clouds turned on) as its outputs are not complete
    assert note is None or f"{option_name(name)} " in note, note
    assert note is not None or not further, name


@pytest.mark.parametrize("name", FURTHER)
def test_a_further_setting_is_compared_only_where_its_format_is_written(earlier, earlier_formats, name, tmp_path):
    """Another ``--fov`` or ``--stereo-strength`` without ``--save-ply`` or ``--save-stereo`` changes no file the
    run keeps: skipped, whether the earlier run wrote that format or not; with it, predicted again."""
    assert _owner(name).setting in FORMATS_ON
    assert earlier_run(*earlier, _changed(name, tmp_path)) == (True, None), name
    assert earlier_run(*earlier_formats, _changed(name, tmp_path, _but(name))) == (True, None), name  # fewer files
    skip, note = earlier_run(*earlier_formats, _changed(name, tmp_path, {**BASE, **FORMATS_ON}))
    assert not skip and note is not None and f"{option_name(name)} " in note, note


@pytest.mark.parametrize("name,value", [("fov", 50.0), ("stereo_strength", 4.0)])
def test_skip_existing_runs_the_model_only_for_a_format_written(earlier_formats, name, value, tmp_path, capsys,
                                                                 monkeypatch):
    """run-video --skip-existing: another --fov (--stereo-strength) without --save-ply (--save-stereo) keeps the
    outputs and loads no model; with it, the video is predicted again and its files made with the new value."""
    import json
    import shutil

    from rollingdepth.io.output_formats import RUN_REPORT
    from rollingdepth.runtime import loading

    loads = []
    real = loading.load_pipeline
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    out = shutil.copytree(earlier_formats[0], tmp_path / "out")
    clip = earlier_formats[0].parent / "clip.mp4"
    recorded = lambda: json.loads(RUN_REPORT.path(out, "clip").read_text())["settings"][name]  # noqa: E731
    before = recorded()
    assert before != value
    for settings, runs in [(_but(name), False), ({**BASE, **FORMATS_ON}, True)]:
        args = [str(clip), *_args({**settings, name: value}), "--skip-existing", "-o", str(out)]
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        captured = capsys.readouterr()
        assert info.value.code == 0, captured.err
        assert len(loads) == runs and ("skipped" in captured.out) != runs, captured.out + captured.err
        assert recorded() == (value if runs else before)  # kept, or made again with the new value


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
