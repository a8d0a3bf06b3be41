"""Options declared once: spellings, the generated commands, their help panels, the page's labels, RunConfig's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer.main

from rollingdepth.frontends import eval_depth as eval_cli
from rollingdepth.frontends import run_video as cli
from rollingdepth.frontends import stereo_video as stereo_cli
from rollingdepth.frontends.options import SETTING_PANELS, CommandOption, help_panel
from rollingdepth.option_spec import Option
from rollingdepth.runtime.run_config import RunConfig, option_name, run_options


def _parse(app, args: list[str]) -> dict:
    """The values Typer hands the command for ``args`` (nothing runs)."""
    command = typer.main.get_command(app)
    return command.make_context(command.name or "cmd", list(args)).params


def test_option_name_spells_each_setting():
    assert option_name("processing_res") == "--res"
    assert option_name("max_frames") == "--frames" and option_name("start_frame") == "--from"
    assert option_name("work_dir") == "--work-dir" and option_name("dtype") == "--dtype"
    assert option_name("resume") == "--resume" and option_name("resume", off=True) == "--restart"
    assert option_name("attn_span") == "--attention-span" and option_name("preset") == "--preset"
    with pytest.raises(KeyError):
        option_name("no_such_setting")


def test_run_video_offers_every_declared_setting_under_its_spellings():
    command = typer.main.get_command(cli.app)
    params = {p.name: p for p in command.params}
    for name, option in run_options().items():
        flags = [f for flag in option.flags for f in flag.split("/")]
        assert set(flags) <= {*params[name].opts, *params[name].secondary_opts}, name
        assert params[name].help == option.help and params[name].rich_help_panel == help_panel(option)


def test_run_video_groups_its_help_by_what_each_setting_affects():
    """The panels are the front end's: a setting's follows from its ``affects``, none is left out of a panel."""
    params = {p.name: p for p in typer.main.get_command(cli.app).params}
    for name, option in run_options().items():
        expected = SETTING_PANELS[option.affects] if option.affects else "Inference"  # the preset: with the method's
        assert params[name].rich_help_panel == expected, name
    panels = [params[p.name].rich_help_panel for p in cli.run_video_params()]
    assert None not in panels and list(dict.fromkeys(panels)) == ["Input", "Inference", "Device", "Output", "Run",
                                                                  "Accepted from the original run_video.py"]
    with pytest.raises(ValueError, match="--stray: neither a setting nor a command's own option"):
        help_panel(Option(("--stray",)))  # an option below the front ends brings no panel of its own
    assert help_panel(CommandOption(("--own",), panel="Run")) == "Run"


def test_eval_depth_keeps_its_panels():
    params = {p.name: p.rich_help_panel for p in typer.main.get_command(eval_cli.app).params}
    assert list(dict.fromkeys(params.values())) == [eval_cli.FILES, eval_cli.DS, eval_cli.PIPE, eval_cli.PROTO, "Run"]
    assert params["pred"] == eval_cli.FILES and params["root"] == eval_cli.DS and params["dilations"] == eval_cli.PIPE
    assert params["protocol"] == eval_cli.PROTO and params["output_dir"] == "Run"


def test_attention_span_and_its_old_spelling():
    new = _parse(cli.app, ["clip.mp4", "--attention-span", "coarse=3,fine=2"])
    old = _parse(cli.app, ["clip.mp4", "--num-view-per-level", "coarse=3,fine=2"])
    assert new["attn_span"] == old["attn_span"] == "coarse=3,fine=2"
    assert run_options()["attn_span"].value(new["attn_span"]) == {"coarse": 3, "fine": 2}
    with pytest.raises(ValueError, match="--attention-span: expected LEVEL=K pairs"):
        run_options()["attn_span"].value("fine")


def test_eval_depth_takes_dilations_from_the_same_declaration(capsys):
    values = [_parse(app, ["--dataset", "bonn", *args])["dilations"]
              for app in (eval_cli.app,) for args in (["-d", "1,10", "-d", "25"], ["--dilations", "1,10,25"])]
    assert [run_options()["dilations"].value(v) for v in values] == [[1, 10, 25], [1, 10, 25]]
    run_params = {p.name: p for p in typer.main.get_command(cli.app).params}
    eval_params = {p.name: p for p in typer.main.get_command(eval_cli.app).params}
    for name in eval_cli.PREDICTION_OPTIONS:
        assert eval_params[name].opts == run_params[name].opts and eval_params[name].help == run_params[name].help
    with pytest.raises(SystemExit) as info:
        eval_cli.main(["--dataset", "bonn", "--root", ".", "-d", "1,x"])
    assert info.value.code == 2


def test_run_config_passes_the_pipelines_input_check(tiny_pipe):
    """A RunConfig is a MethodSettings: check_inputs validates it (RunConfig's own check is ``check``)."""
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    settings = tiny_pipe.check_inputs(frames, RunConfig(dilations=[1, 4], snippet_lengths=[2]))
    assert settings.dilations == [1, 4] and settings.snippet_lengths == [2, 2]
    with pytest.raises(ValueError, match="^refine_step"):
        tiny_pipe.check_inputs(frames, RunConfig(refine_step=10_000))
    with pytest.raises(ValueError, match="--frames"):
        RunConfig(max_frames=-1).check()


def test_the_page_names_each_setting_by_its_label():
    """Every message naming a labelled option reads with the page's label, whichever spelling."""
    from rollingdepth.frontends.app import PAGE_LABELS, _page_message

    assert set(PAGE_LABELS) <= set(run_options()), set(PAGE_LABELS) - set(run_options())  # real settings

    cases = {"processing_res": -1, "max_frames": -1, "dilations": [2], "refine_step": -1, "cmaps": ["nope"]}
    for name, value in cases.items():
        with pytest.raises(ValueError) as info:
            RunConfig.build("fast", {name: value})
        assert str(info.value).startswith(option_name(name))
        assert _page_message(info.value).startswith(PAGE_LABELS[name] + ":"), _page_message(info.value)
    with pytest.raises(ValueError) as info:
        RunConfig.build("nonsense", {})
    assert _page_message(info.value).startswith("Preset:")


def test_a_preset_file_with_the_former_name_of_max_frames(tmp_path):
    (tmp_path / "old.yaml").write_text("frame_count: 5\ndilations: [1, 4]\n")
    assert RunConfig.build(tmp_path / "old.yaml", {}).max_frames == 5
    assert RunConfig.build(tmp_path / "old.yaml", {"max_frames": 7}).max_frames == 7


def test_each_command_takes_its_options_as_a_typed_object():
    """A command's own options are the fields of its arguments' dataclass, declared once: Typer's parameters come
    from them, and what Typer parsed comes back as that object (``given``), not as a dict read by key."""
    from rollingdepth.frontends.options import Reporting, given, params_of
    from rollingdepth.frontends.stereo_video import StereoVideoArgs

    for command, args in ((cli.app, cli.RunVideoArgs), (eval_cli.app, eval_cli.EvalDepthArgs),
                          (stereo_cli.app, StereoVideoArgs)):
        params = {p.name: p for p in typer.main.get_command(command).params}
        for param in params_of(args):
            assert params[param.name].opts[-1] in param.option.flags[-1], param.name
            assert params[param.name].default == param.default, param.name
    values = {p.name: p.default for p in params_of(cli.RunVideoArgs) + params_of(Reporting)}
    parsed = given(cli.RunVideoArgs, {**values, "output_dir": Path("out"), "skip_existing": True})
    assert parsed.output_dir == Path("out") and parsed.skip_existing and parsed.input_video is None
    assert given(Reporting, {**values, "quiet": True}).quiet
