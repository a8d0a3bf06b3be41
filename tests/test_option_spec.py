"""Declarations: every setting says what it affects, and the lists that compare settings come from that."""

from __future__ import annotations

import dataclasses

from rollingdepth.method.settings import MethodSettings
from rollingdepth.option_spec import Affects, Option, affecting, opt, options_of, unclassified
from rollingdepth.runtime.run_config import (RunConfig, prediction_settings, resume_compared, run_options,
                                             skip_existing_compared)


def test_every_setting_says_what_it_affects():
    assert unclassified(MethodSettings) == [] and unclassified(RunConfig) == []
    # a field added without saying it is found, whether it has an option or not
    extra = dataclasses.make_dataclass("Extra", [("new", int, opt(0, Option(("--new",)))),
                                                 ("bare", int, dataclasses.field(default=0))], bases=(RunConfig,))
    assert unclassified(extra) == ["new", "bare"]


def test_declarations_carry_no_presentation():
    """Help panels and page labels are the front ends' (rollingdepth.frontends.options, .app): an option
    declared below them holds none."""
    assert not {"panel", "label"} & {f.name for f in dataclasses.fields(Option)}


def test_list_options_say_how_their_values_read():
    for name, option in run_options().items():
        assert (option.kind is list) == (option.list_form is not None), name
    assert run_options()["save_ply"].bare == "1"


def test_planned_only_where_skip_existing_compares():
    for name, option in options_of(RunConfig).items():
        if option.planned:
            assert option.affects in (Affects.PREDICTION, Affects.OUTPUT), name


def test_the_compared_lists_come_from_the_declarations():
    # the classification, as reviewed: changing it changes what compares a setting (say why in the commit)
    prediction = set(prediction_settings())
    assert prediction == {"processing_res", "dilations", "cap_dilation", "snippet_lengths", "refine_step",
                          "refine_snippet_len", "refine_start_dilation", "coalign", "attn_span", "checkpoint", "dtype",
                          "seed", "start_frame", "max_frames", "shots", "segment_frames"}
    assert set(affecting(RunConfig, Affects.OUTPUT)) == {"output_fps", "restore_res", "audio", "depth_out", "depth_range",
                                                         "depth_points", "save_ply", "fov", "focal", "ply_stride",
                                                             "stereo_strength", "convergence"}
    assert set(resume_compared()) == prediction | {"device", "max_vae_bs", "unet_batch_size"}
    given, planned = set(skip_existing_compared(planned=False)), set(skip_existing_compared(planned=True))
    assert not given & planned and given | planned == set(affecting(RunConfig, Affects.PREDICTION, Affects.OUTPUT))
    assert planned == {"dilations", "snippet_lengths", "refine_snippet_len", "refine_start_dilation", "dtype"}
    # which files are written is looked for (outputs_complete), not compared; only the point clouds' every
    # how many frames changes what a written folder holds
    files = set(affecting(RunConfig, Affects.FILES))
    assert {"save_npy", "cmaps", "save_depth_video", "save_png16"} <= files and "save_ply" in given


def test_eval_depth_compares_the_prediction_settings_a_benchmark_run_may_change():
    from rollingdepth.frontends import eval_depth

    fixed = eval_depth._fixed_settings()
    assert set(eval_depth.PREDICTION_KEYS) == set(prediction_settings()) - set(fixed)
    assert {"start_frame", "max_frames", "shots", "segment_frames"} <= set(fixed)
    assert eval_depth.PREDICTION_OPTIONS == ("preset", *eval_depth.PREDICTION_KEYS, "device")
