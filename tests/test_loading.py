"""Loading checkpoints: the tiny checkpoint and the Hub id load quietly and offline; every way
a checkpoint can fail to load is one line in our words, whose advice works."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from rollingdepth import RollingDepthPipeline
from rollingdepth.method.cross_frame_attention import CrossFrameAttnProcessor
from rollingdepth.runtime.loading import CheckpointError, checkpoint_error_message, download_command, load_pipeline

from .conftest import TINY_CHECKPOINT, make_clip

HUB_ID = "prs-eth/rollingdepth-v1-0"
MISSING_ID = "no-such-org/no-such-model"


def _check_pipe(pipe):
    assert isinstance(pipe, RollingDepthPipeline)
    assert pipe.unet.config.in_channels == 8
    assert all(isinstance(p, CrossFrameAttnProcessor) for p in pipe.unet.attn_processors.values())
    emb = pipe.empty_text_embedding()
    assert emb.shape == (1, 2, pipe.text_encoder.config.hidden_size)


def _hub_cache(tmp_path):
    """The tiny checkpoint laid out as a cached snapshot of prs-eth/rollingdepth-v1-0."""
    cache = tmp_path / "hub"
    repo = cache / "models--prs-eth--rollingdepth-v1-0"
    revision = "0" * 40
    shutil.copytree(TINY_CHECKPOINT, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return cache


def one_line(message: str) -> str:
    assert len(message.splitlines()) == 1, message
    return message


def load_error(checkpoint, **kwargs) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_pipeline(str(checkpoint), "fp32", "cpu", **kwargs)
    one_line(str(info.value))
    return info.value


def test_tiny_checkpoint_loads_quietly(capfd):
    pipe = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT))
    out, err = capfd.readouterr()
    _check_pipe(pipe)
    assert out == "" and err == "", f"loading printed:\n{out}{err}"


def test_load_pipeline_loads_the_tiny_checkpoint_quietly(capfd):
    _check_pipe(load_pipeline(str(TINY_CHECKPOINT), "fp32", "cpu"))
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"loading printed:\n{out}{err}"


def test_hub_id_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """The Hub id goes through huggingface_hub's cache: load it by id, offline."""
    cache = _hub_cache(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = RollingDepthPipeline.from_pretrained(HUB_ID, cache_dir=str(cache))
    _check_pipe(pipe)
    ref = RollingDepthPipeline.from_pretrained(str(TINY_CHECKPOINT))
    for a, b in zip(pipe.unet.parameters(), ref.unet.parameters()):
        assert torch.equal(a, b)
    _check_pipe(load_pipeline(HUB_ID, "fp32", "cpu", cache_dir=str(cache)))


def test_load_falls_back_to_fp32_on_cpu(monkeypatch):
    monkeypatch.setenv("ROLLINGDEPTH_CPU_BF16", "0")  # a CPU without native bf16 (tests/test_device.py: with)
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        pipe = RollingDepthPipeline.load(str(TINY_CHECKPOINT), dtype="fp16", device="cpu")
    assert pipe.dtype == torch.float32 and pipe.device.type == "cpu"


# ----------------------------------------------------------------------------- the Hub
def test_missing_checkpoint_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exc = load_error(MISSING_ID, cache_dir=str(tmp_path))
    assert str(exc).startswith(f"checkpoint {MISSING_ID}: not downloaded yet")
    assert "Hugging Face Hub cannot be reached: offline mode (HF_HUB_OFFLINE is set)" in str(exc)
    assert f"`{download_command(MISSING_ID)}`, then pass -c DIR" in str(exc)
    assert "Cannot load model" not in str(exc)  # diffusers' own text only with --verbose
    assert "Cannot load model" in exc.detail
    verbose = checkpoint_error_message(exc, verbose=True).splitlines()
    assert verbose[0] == str(exc) and verbose[1].startswith("  details: ") and len(verbose) == 2


def test_no_network_is_named(tmp_path):
    """A Hub that refuses connections (a closed local port): 'no network', not 'offline mode'."""
    code = f"from rollingdepth.runtime.loading import load_pipeline\nload_pipeline({HUB_ID!r}, 'fp32', 'cpu')"
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path),
           "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rollingdepth.errors.CheckpointError: checkpoint {HUB_ID}: not downloaded yet"), last
    assert "cannot be reached (no network connection)" in last


def _hub_error(cls, text):
    """An error of huggingface_hub's class ``cls`` (its constructor wants an HTTP response)."""
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    return err


@pytest.mark.parametrize("kind,expected", [
    ("RepositoryNotFoundError", "no such model on the Hugging Face Hub, or a private one; check the id"),
    ("GatedRepoError", "the Hugging Face Hub refuses the download (a gated model)"),
])
def test_hub_refusals_are_named(monkeypatch, kind, expected):
    import huggingface_hub.errors

    def refuse(*args, **kwargs):
        cause = _hub_error(getattr(huggingface_hub.errors, kind), "404 Client Error. Repository Not Found")
        raise OSError(f"Cannot load model {MISSING_ID}: the model is not fully cached locally") from cause

    monkeypatch.setattr(RollingDepthPipeline, "download", refuse)
    exc = load_error(MISSING_ID)
    assert str(exc).startswith(f"checkpoint {MISSING_ID}: {expected}"), str(exc)


def _commands(message: str) -> list[list[str]]:
    return [shlex.split(c) for c in re.findall(r"`([^`]+)`", message)]


def test_the_advised_commands_exist(tmp_path, monkeypatch):
    """Every command a message advises runs with --help in the installed huggingface_hub."""
    import huggingface_hub.errors

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commands = _commands(str(load_error(HUB_ID, cache_dir=str(tmp_path))))

    def not_found(*args, **kwargs):
        raise _hub_error(huggingface_hub.errors.RepositoryNotFoundError, "404 Client Error")

    monkeypatch.setattr(RollingDepthPipeline, "download", not_found)
    commands += _commands(str(load_error(MISSING_ID)))  # advises logging in
    assert len(commands) == 2 and commands[0][1:] == ["download", HUB_ID, "--local-dir", "DIR"]
    for argv in commands:
        proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, (argv, proc.stdout[-500:], proc.stderr[-500:])
        assert "Usage" in proc.stdout
    assert "huggingface-cli" not in download_command()  # huggingface_hub >= 1.0 has only `hf`


# ----------------------------------------------------------------------------- local folders
def _edit_index(folder, **changes):
    index = json.loads((folder / "model_index.json").read_text())
    index.update(changes)
    (folder / "model_index.json").write_text(json.dumps(index))


def make_bad_checkpoint(tmp_path, kind: str):
    """A copy of the tiny checkpoint broken in one way (or an empty folder)."""
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
        return folder
    shutil.copytree(TINY_CHECKPOINT, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if kind == "marigold":
        _edit_index(folder, _class_name="MarigoldDepthPipeline", prediction_type="depth", default_denoising_steps=1)
    elif kind == "sd2":
        _edit_index(folder, _class_name="StableDiffusionPipeline", safety_checker=[None, None],
                    feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=False)
        (folder / "feature_extractor").mkdir()
        (folder / "feature_extractor" / "preprocessor_config.json").write_text("{}")
    elif kind == "no_model_index":
        (folder / "model_index.json").unlink()
    elif kind == "no_unet_weights":
        weights.unlink()
    elif kind == "no_unet":
        shutil.rmtree(folder / "unet")
    elif kind == "no_vocab":
        (folder / "tokenizer" / "vocab.json").unlink()
    elif kind == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "config_not_json":
        (folder / "vae" / "config.json").write_text('{"in_channels": 3,')
    elif kind == "wrong_weights":
        from safetensors.numpy import save_file

        save_file({"not_a_unet_tensor": np.zeros(3, np.float32)}, str(weights))
    else:
        raise ValueError(f"kind: unknown {kind!r}")
    return folder


BAD_FOLDERS = {
    "empty": "not a RollingDepth checkpoint: the folder is empty (expected model_index.json, unet/",
    "marigold": "not a RollingDepth checkpoint: its model_index.json describes a MarigoldDepthPipeline",
    "sd2": "not a RollingDepth checkpoint: its model_index.json describes a StableDiffusionPipeline",
    "no_model_index": "not a RollingDepth checkpoint: no model_index.json",
    "no_unet_weights": "not a RollingDepth checkpoint: missing unet/ weights (*.safetensors or *.bin)",
    "no_unet": "not a RollingDepth checkpoint: missing unet/;",
    "no_vocab": "not a RollingDepth checkpoint: missing tokenizer/vocab.json",
    "truncated_weights": "damaged files that cannot be read: unet/diffusion_pytorch_model.safetensors",
    "config_not_json": "damaged files that cannot be read: vae/config.json",
    "wrong_weights": "the weights in unet/ do not fit the model (tensors missing)",
}


@pytest.mark.parametrize("kind", sorted(BAD_FOLDERS))
def test_bad_folder_names_what_is_wrong(tmp_path, kind):
    folder = make_bad_checkpoint(tmp_path, kind)
    exc = load_error(folder)
    assert str(exc).startswith(f"checkpoint {folder}: {BAD_FOLDERS[kind]}"), str(exc)
    assert download_command() in str(exc)


def test_not_a_folder_nor_a_hub_id(tmp_path):
    exc = load_error(tmp_path / "nowhere")
    assert str(exc) == (f"checkpoint {tmp_path / 'nowhere'}: no such folder, and not a Hub id (owner/name); "
                        f"pass -c PATH to a checkpoint folder, or a Hub id such as {HUB_ID}")
    assert "is a file, not a checkpoint folder" in str(load_error(TINY_CHECKPOINT / "model_index.json"))


def test_checkpoint_error_is_an_input_error():
    from rollingdepth.io.video_io import InputError

    assert issubclass(CheckpointError, InputError) and issubclass(CheckpointError, ValueError)


# ----------------------------------------------------------------------------- run-video
def _run_video(args, capsys):
    from rollingdepth.frontends import run_video as cli

    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _assert_said_once(code, out, err, expected: str):
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    assert expected in errors[0]
    assert (out + err).count(expected) == 1
    assert "run-video summary" not in out and "videos" not in err and "1/1" not in err + out  # no table, no bar
    others = [line for line in err.splitlines() if line.strip() and line != errors[0]]
    assert [line.split()[:2] for line in others] == [["loading", "checkpoint"]], err  # no warning, nothing else


@pytest.fixture
def a_clip(tmp_path):
    from .test_run_video import write_clip

    return write_clip(tmp_path / "clip.mp4", make_clip(4, 24, 32))


def test_run_video_reports_a_bad_folder_once(tmp_path, capsys, a_clip):
    folder = make_bad_checkpoint(tmp_path, "marigold")
    second = shutil.copy(a_clip, tmp_path / "second.mp4")  # two videos, still one message
    listing = tmp_path / "list.txt"
    listing.write_text(f"{a_clip}\n{second}\n")
    code, out, err = _run_video([listing, "-c", folder, "-o", tmp_path / "o"], capsys)
    _assert_said_once(code, out, err, "describes a MarigoldDepthPipeline")
    assert "Traceback" not in err and not (tmp_path / "o").exists()  # made for the run, removed: nothing written


def test_run_video_verbose_shows_the_inner_error(tmp_path, capsys, a_clip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = _run_video([a_clip, "-c", MISSING_ID, "-v", "-o", tmp_path / "o"], capsys)
    assert code == 2 and "Traceback" in err
    lines = err.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("Error:"))
    assert "offline mode (HF_HUB_OFFLINE is set)" in lines[i]
    assert lines[i + 1].startswith("  details: Cannot load model")


def test_first_run_without_the_checkpoint(tmp_path, a_clip):
    """The README's first command on a fresh machine that cannot reach the Hub."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "rollingdepth", str(a_clip), "-o", str(tmp_path / "output")],
                          capture_output=True, text=True, env=env, timeout=300)
    expected = (f"Error: checkpoint {HUB_ID}: not downloaded yet, and the Hugging Face Hub cannot be reached: "
                f"offline mode (HF_HUB_OFFLINE is set); download it where there is internet with "
                f"`{download_command(HUB_ID)}`, then pass -c DIR")
    _assert_said_once(proc.returncode, proc.stdout, proc.stderr, expected)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "output").exists()  # made for the run, removed again: nothing was written
