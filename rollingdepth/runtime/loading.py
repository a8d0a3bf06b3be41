"""Loading a RollingDepth checkpoint, and the one message every front end shows when it fails.

A checkpoint is a local folder or a Hugging Face Hub id. :func:`load_pipeline` resolves it to
a folder (downloading a Hub id into the Hub cache), checks that the folder is a RollingDepth
checkpoint, loads it and sets up the accelerator options. Every failure is a
:class:`CheckpointError` that says in our words what happened (no network, no such model,
not a RollingDepth checkpoint, damaged files) and what to do; the library's own text is kept
in ``detail`` for ``--verbose``. Front ends (``run-video``, a web page) show
:func:`checkpoint_error_message`.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
from pathlib import Path

from rollingdepth.errors import CheckpointError, InputError  # noqa: F401  (both re-exported)
from rollingdepth.method.settings import DEFAULT_CHECKPOINT

__all__ = ["DEFAULT_CHECKPOINT", "HUB_ID", "CheckpointError", "accelerate_pipeline", "check_checkpoint_folder", "checkpoint_error_message",
           "download_command", "load_pipeline", "login_command", "resolve_checkpoint"]

HUB_ID = DEFAULT_CHECKPOINT
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PIPELINE_CLASS = "RollingDepthPipeline"
LAYOUT = "model_index.json, unet/, vae/, scheduler/, text_encoder/ and tokenizer/"
# component -> (its config file, whether it holds weights)
COMPONENTS = {
    "unet": ("config.json", True),
    "vae": ("config.json", True),
    "text_encoder": ("config.json", True),
    "scheduler": ("scheduler_config.json", False),
}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "ConnectionError", "NetworkError", "ProxyError",
                   "ReadTimeout", "TimeoutException", "TransportError", "LocalEntryNotFoundError"}


def checkpoint_error_message(exc: CheckpointError, verbose: bool = False) -> str:
    """What a front end shows: one line; with ``verbose``, the underlying error on a second line."""
    if verbose and exc.detail:
        return f"{exc}\n  details: {exc.detail}"
    return str(exc)


# ----------------------------------------------------------------------------- advice
def _hub_script(name: str) -> str | None:
    """How to call the installed huggingface_hub's command ``name``, or None if it has none."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        scripts = {e.name for e in distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    except PackageNotFoundError:
        return None
    if name not in scripts:
        return None
    if shutil.which(name):
        return name
    beside = Path(sys.executable).parent / name  # a virtual environment that is not activated
    return str(beside) if beside.exists() else name


def download_command(checkpoint: str = HUB_ID, folder: str = "DIR") -> str:
    """The installed huggingface_hub's command that downloads ``checkpoint`` into ``folder``."""
    for cli, sub in (("hf", "download"), ("huggingface-cli", "download")):  # hf since huggingface_hub 0.34
        script = _hub_script(cli)
        if script:
            return f"{script} {sub} {checkpoint} --local-dir {folder}"
    return f"python -c \"import huggingface_hub as h; h.snapshot_download('{checkpoint}', local_dir='{folder}')\""


def login_command() -> str:
    """The installed huggingface_hub's command that logs in."""
    if _hub_script("hf"):
        return f"{_hub_script('hf')} auth login"
    if _hub_script("huggingface-cli"):
        return f"{_hub_script('huggingface-cli')} login"
    return "python -c \"import huggingface_hub as h; h.login()\""


def _get_it(checkpoint: str) -> str:
    return f"download it where there is internet with `{download_command(checkpoint)}`, then pass -c DIR"


# ----------------------------------------------------------------------------- folder checks
def missing_parts(folder: Path) -> str:
    """What ``folder`` lacks to be a RollingDepth checkpoint, in words ("" when nothing)."""
    if not any(folder.iterdir()):
        return f"the folder is empty (expected {LAYOUT})"
    index = folder / "model_index.json"
    if not index.is_file():
        return f"no model_index.json (expected {LAYOUT})"
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (ValueError, AttributeError, OSError):
        name = PIPELINE_CLASS  # damaged, not foreign: damaged_files() names it
    if name != PIPELINE_CLASS:
        return f"its model_index.json describes a {name or 'pipeline without a _class_name'}, not a {PIPELINE_CLASS}"
    missing = []
    for component, (config, has_weights) in COMPONENTS.items():
        part = folder / component
        if not part.is_dir():
            missing.append(f"{component}/")
            continue
        if not (part / config).is_file():
            missing.append(f"{component}/{config}")
        if has_weights and not any(any(part.glob(p)) for p in WEIGHT_PATTERNS):
            missing.append(f"{component}/ weights ({' or '.join(WEIGHT_PATTERNS)})")
    tokenizer = folder / "tokenizer"
    if not tokenizer.is_dir():
        missing.append("tokenizer/")
    elif not (tokenizer / "tokenizer.json").is_file():
        missing += [f"tokenizer/{f}" for f in ("vocab.json", "merges.txt") if not (tokenizer / f).is_file()]
    return f"missing {', '.join(missing)}" if missing else ""


def damaged_files(folder: Path) -> list[str]:
    """Files of ``folder`` that cannot be read: configs that are not JSON, safetensors with a bad header."""
    damaged = []
    configs = [folder / "model_index.json", *(folder / c / f for c, (f, _) in COMPONENTS.items())]
    for path in configs:
        try:
            json.loads(path.read_text())
        except ValueError:
            damaged.append(str(path.relative_to(folder)))
        except OSError:
            pass  # missing: missing_parts() names it
    from safetensors import safe_open

    for path in sorted(folder.glob("*/*.safetensors")):
        try:
            with safe_open(str(path), "np"):
                pass
        except Exception:  # SafetensorError: truncated, not a safetensors file
            damaged.append(str(path.relative_to(folder)))
    return damaged


def check_checkpoint_folder(folder: Path, checkpoint: str) -> None:
    """Raise :class:`CheckpointError` when ``folder`` is not a complete, readable RollingDepth checkpoint."""
    if not folder.is_dir():
        raise CheckpointError(checkpoint, "is a file, not a checkpoint folder",
                              "pass -c PATH to the folder that holds model_index.json")
    missing = missing_parts(folder)
    if missing:
        held = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise CheckpointError(checkpoint, f"not a RollingDepth checkpoint: {missing}",
                              f"get RollingDepth's with `{download_command()}` and pass -c DIR",
                              detail=f"{folder} holds: {held}")
    damaged = damaged_files(folder)
    if damaged:
        raise CheckpointError(checkpoint, f"damaged files that cannot be read: {', '.join(damaged)}",
                              _again(checkpoint))


def _again(checkpoint: str) -> str:
    if _is_hub_id(checkpoint):
        return f"download it again with `{download_command(checkpoint)}` and pass -c DIR"
    return f"copy or download it again (`{download_command()}`)"


# ----------------------------------------------------------------------------- the Hub
def _is_hub_id(checkpoint: str) -> bool:
    return bool(_HUB_ID.match(checkpoint)) and not Path(checkpoint).expanduser().exists()


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return any(k.__name__ in _NETWORK_ERRORS for k in type(exc).__mro__)  # httpx, httpx2, requests alike


def hub_failure(checkpoint: str, exc: BaseException) -> CheckpointError:
    """Our words for why the Hub id ``checkpoint`` could not be downloaded."""
    from huggingface_hub.errors import (GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    causes = list(_causes(exc))
    detail = " <- ".join(_one_line(e) for e in causes)
    if any(isinstance(e, GatedRepoError) for e in causes):
        return CheckpointError(checkpoint, "the Hugging Face Hub refuses the download (a gated model)",
                               f"accept its terms on huggingface.co and log in with `{login_command()}`", detail)
    if any(isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)) for e in causes):
        return CheckpointError(checkpoint, "no such model on the Hugging Face Hub, or a private one",
                               f"check the id (RollingDepth's is {HUB_ID}), log in with `{login_command()}` "
                               f"for a private model, or pass -c PATH to a local checkpoint folder", detail)
    if any(isinstance(e, OfflineModeIsEnabled) for e in causes):
        return CheckpointError(checkpoint, "not downloaded yet, and the Hugging Face Hub cannot be reached: "
                               "offline mode (HF_HUB_OFFLINE is set)", _get_it(checkpoint), detail)
    if any(_is_network_error(e) for e in causes):
        return CheckpointError(checkpoint, "not downloaded yet, and the Hugging Face Hub cannot be reached "
                               "(no network connection)", _get_it(checkpoint), detail)
    return CheckpointError(checkpoint, "could not be downloaded from the Hugging Face Hub (the Hub answered "
                           "with an error)", f"try again later, or {_get_it(checkpoint)}", detail)


def resolve_checkpoint(checkpoint: str, **hub_kwargs) -> Path:
    """The local folder of ``checkpoint``: the folder itself, or a Hub id downloaded into the Hub cache.

    ``hub_kwargs`` (``cache_dir``, ``revision``, ...) go to the download.
    """
    path = Path(checkpoint).expanduser()
    if path.exists():
        return path
    if not _HUB_ID.match(checkpoint):
        raise CheckpointError(checkpoint, "no such folder, and not a Hub id (owner/name)",
                              f"pass -c PATH to a checkpoint folder, or a Hub id such as {HUB_ID}")
    from rollingdepth.method.pipeline import _quiet_loading
    from rollingdepth.runtime.pipeline import RollingDepthPipeline

    try:
        with _quiet_loading():
            return Path(RollingDepthPipeline.download(checkpoint, **hub_kwargs))
    except Exception as exc:  # every way a download fails becomes one of our messages
        raise hub_failure(checkpoint, exc) from exc


# ----------------------------------------------------------------------------- loading
def load_pipeline(checkpoint: str, dtype: str, device: str | None, *, compile: bool = False,
                  channels_last: bool = False, tf32: bool = True, **hub_kwargs):
    """Load a checkpoint folder or Hub id and set up the accelerator options.

    Raises :class:`CheckpointError` (an ``InputError``) with a way out when the checkpoint
    cannot be loaded.
    """
    pipe = _load_checkpoint(checkpoint, dtype, device, **hub_kwargs)
    accelerate_pipeline(pipe, compile=compile, channels_last=channels_last, tf32=tf32)
    return pipe


def accelerate_pipeline(pipe, *, compile: bool = False, channels_last: bool = False, tf32: bool = True) -> None:
    """TF32 (CUDA), channels-last memory format and torch.compile of the UNet and VAE parts."""
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile:
        pipe.unet = torch.compile(pipe.unet)
        pipe.vae.encoder = torch.compile(pipe.vae.encoder)
        pipe.vae.decoder = torch.compile(pipe.vae.decoder)


def _load_checkpoint(checkpoint: str, dtype: str, device: str | None, **hub_kwargs):
    """Resolve, check and load ``checkpoint`` on ``device`` (device and dtype errors pass through)."""
    from rollingdepth.method.device import resolve_device, resolve_dtype
    from rollingdepth.runtime.pipeline import RollingDepthPipeline

    folder = resolve_checkpoint(checkpoint, **hub_kwargs)
    check_checkpoint_folder(folder, checkpoint)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)  # after the checks: a failure is the only message
    try:
        pipe = RollingDepthPipeline.from_pretrained(str(folder), dtype=torch_dtype)
    except Exception as exc:  # the checks above passed: a file the library could not read
        raise CheckpointError(checkpoint, "its files could not be read (damaged or of an unexpected format)",
                              _again(checkpoint), _one_line(exc)) from exc
    unfilled = [f"{name}/" for name in ("unet", "vae", "text_encoder") if _has_unloaded_tensors(getattr(pipe, name))]
    if unfilled:
        raise CheckpointError(checkpoint, f"the weights in {', '.join(unfilled)} do not fit the model (tensors missing)",
                              _again(checkpoint))
    return pipe.to(dev)


def _has_unloaded_tensors(module) -> bool:
    """diffusers leaves parameters that the weight file lacks on the meta device."""
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
