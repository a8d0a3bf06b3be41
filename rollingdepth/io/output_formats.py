"""Output formats: one declaration for each kind of file ``run-video`` writes.

A format is a frozen dataclass registered by name (:func:`register`, as LeRobot registers its
configs). Its fields declare the setting that turns it on (a ``RunConfig`` field; the option's
spellings and help are here, ``RunConfig`` takes them with :meth:`OutputFormat.option`), its
file or folder beside the video's stem, and what it needs (the input's frames, depth rather than
inverse depth); its methods are its writer (:meth:`~OutputFormat.open` for frame-by-frame files,
:meth:`~OutputFormat.finish` for whole ones), its entries in ``{stem}_run.json``
(:meth:`~OutputFormat.report`) and, where eval-depth can score it, its reader
(:meth:`~OutputFormat.read`: the values as written; ``VideoMapping.to_inverse`` turns them back
into the prediction). ``download``: the web page offers it.

The rest of the package reads the registry (:func:`output_formats`, :func:`output_format`):
``RunConfig``'s output settings, run-video's option list, the files of a finished video
(``--skip-existing``), the page's downloads, the predictions eval-depth finds. A new format is a
class here and its setting's line in ``RunConfig``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from rollingdepth._version import __version__
from rollingdepth.errors import InputError
from rollingdepth.io.exports import VideoMapping
from rollingdepth.io.video_io import atomic_dir, atomic_path, natural_key
from rollingdepth.option_spec import Affects, ListForm, Option, parse_names

__all__ = ["RUN_REPORT", "OutputFormat", "OutputFrame", "Uint16Scale", "Uint16Values", "VideoOutput",
           "expected_names", "output_format", "output_formats", "output_settings", "prediction_format", "prediction_patterns",
           "read_npy_maps", "readable_formats", "register", "switches"]


@dataclass(frozen=True)
class OutputFrame:
    """One frame as the writers get it."""

    index: int
    prediction: np.ndarray  # [H, W] at the output size
    values: np.ndarray  # what the depth files hold: the prediction through the video's mapping
    image: np.ndarray | None  # the input frame, uint8 [H, W, 3] at the output size (when a format needs it)
    input_image: np.ndarray | None = None  # the same at the input's own size


Writer = Callable[[OutputFrame], None]


@dataclass(frozen=True)
class VideoOutput:
    """One video's outputs as their writers see them (given by ``runtime.outputs.PendingOutputs``)."""

    out_dir: Path
    stem: str
    settings: Any  # the run's RunConfig: each format reads its own setting
    frames: int
    size: tuple[int, int]  # (H, W) of the outputs
    input_size: tuple[int, int]  # (H, W) of the input's frames as shown
    prediction_range: tuple[float, float]  # the prediction's min and max over the video: the colour maps' range
    mapping: VideoMapping  # prediction -> the values of the depth files
    fps: Any  # the videos' rate: a Fraction or a float
    sound: Callable[[], Any]  # the source's AudioSpan for the frames written, or None
    prediction_file: Callable[[], Path]  # the prediction's own float32 .npy, complete
    snippet_maps: Callable[[], list[Path]]  # the decoded snippets' .npy per dilation, complete
    snippet_plan: tuple[list[int], list[int]] | None  # each snippet group's dilation and snippet length, run in one piece
    sample_aspect: Any = None  # the source's sample aspect (a Fraction) where its pixels are not square
    frame_times: Any = None  # a variable-rate source's (pts, time base) of the frames written, else None
    shots: tuple[int, ...] = (0,)  # the first frame of each shot
    done: frozenset[str] = frozenset()  # files a killed run of this work folder completed

    @property
    def input_width(self) -> int:
        """The input's width (a focal length is in its pixels)."""
        return self.input_size[1]


# ----------------------------------------------------------------------------- the declaration
@dataclass(frozen=True)
class OutputFormat:
    """An output's declaration: each kind is a subclass whose field defaults are its values.

    The writer's methods are called only when :meth:`enabled`; each skips the files in ``out.done``."""

    name: ClassVar[str] = ""  # set by @register
    is_file: ClassVar[bool] = True  # a file (else a folder of frames)
    readable: ClassVar[bool] = False  # eval-depth --pred reads it
    needs_report: ClassVar[bool] = False  # reading it needs the run.json beside it
    suffix: str = ""  # after the stem: "_pred.npy", "_depth16"
    setting: str | None = None  # the RunConfig field that turns it on; None: always written
    flags: tuple[str, ...] = ()  # its option's spellings
    help: str = ""  # its option's help; "{files}" stands for its files
    default: Any = False  # its setting's default
    what: str = ""  # its files in a message
    needs_rgb: bool = False  # its writer takes the input's frames (read a second time)
    needs_depth: bool = False  # it holds depth (--depth-out depth), not inverse depth
    download: bool = False  # offered on the web page
    exact: bool = True  # it reads back as written (eval-depth prefers such a file of a stem)
    more: tuple[tuple[str, Any, Option], ...] = ()  # its further settings: (RunConfig field, default, option)

    @property
    def files(self) -> str:
        """Its file name for a help text: ``{stem}_pred.npy``."""
        return "{stem}" + self.suffix

    @property
    def option(self) -> Option:
        """The option of its setting (an on/off option unless a format says otherwise): it says which files
        are written (``outputs_complete`` looks for them), not what they hold."""
        return Option(self.flags, self.help.format(files=self.files), None, bool, show_default=False,
                      affects=Affects.FILES)

    def more_option(self, field: str) -> tuple[Any, Option]:
        """The default and option of one of its further settings."""
        return next((default, option) for name, default, option in self.more if name == field)

    def enabled(self, settings) -> bool:
        return self.setting is None or bool(getattr(settings, self.setting))

    def names(self, stem: str, settings) -> list[str]:
        """Its files (or folders) of a finished video; none when it is off."""
        return [stem + self.suffix] if self.enabled(settings) else []

    def path(self, folder: Path, stem: str) -> Path:
        return Path(folder) / f"{stem}{self.suffix}"

    def stem_of(self, name: str) -> str | None:
        """The stem of one of its files' names, else None."""
        return name[: -len(self.suffix)] if name.endswith(self.suffix) and len(name) > len(self.suffix) else None

    def check(self, settings) -> None:
        """Raise ``ValueError`` naming its option for a value of its setting that cannot work."""

    def available(self, what: str) -> None:
        """Raise ``ValueError`` naming ``what`` (what needs it) when a library it needs is missing."""

    def open(self, out: VideoOutput, stack: contextlib.ExitStack) -> list[tuple[str, Writer]]:
        """Its frame-by-frame writers, opened in ``stack`` (which renames the files when complete), each
        with its file's name."""
        return []

    def finish(self, out: VideoOutput) -> list[str]:
        """After the frames: the files it writes whole (their names)."""
        return []

    def report(self, out: VideoOutput) -> dict:
        """Its entries in run.json (None where it was not written)."""
        return {}

    def read(self, path: Path, report: dict | None) -> np.ndarray:
        """Its values ``[N, H, W]`` as written (``report``: the run.json beside it, if any)."""
        raise TypeError(f"{self.name}: eval-depth does not read it")


_REGISTRY: dict[str, OutputFormat] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: the class's instance is the declaration of the output format ``name``."""

    def add(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"output format {name!r} is declared twice")
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return add


# ----------------------------------------------------------------------------- writing helpers
class _NpyRows:
    """A float32 ``[N, H, W]`` ``.npy`` written frame by frame, in order."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self._file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self._file, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})

    def write(self, frame: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(frame, dtype="<f4").tobytes())

    def close(self) -> None:
        self._file.close()


def read_npy_maps(path: Path) -> np.ndarray:
    """An ``.npy`` of maps, ``[N, 1, H, W]`` taken as ``[N, H, W]``; one line when unreadable."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    return data[:, 0] if data.ndim == 4 and data.shape[1] == 1 else data


def _video(out: VideoOutput, stack: contextlib.ExitStack, name: str, size: tuple[int, int]):
    """An H.264 video ``name`` in ``out.out_dir`` (with the source's sound), opened in ``stack``."""
    from rollingdepth.io.video_io import VideoWriter

    path = stack.enter_context(atomic_path(out.out_dir / name))
    return stack.enter_context(VideoWriter(path, out.fps, size, audio=out.sound(), sample_aspect=out.sample_aspect,
                                           times=out.frame_times))


@dataclass(frozen=True)
class Uint16Scale:
    """Values ``lo..hi`` as 16-bit integers, ``round((value - lo) / (hi - lo) * 65535)``; read back as
    ``value = lo + int / 65535 * (hi - lo)``, within one step of the value."""

    lo: float
    hi: float

    def encode(self, values: np.ndarray) -> np.ndarray:
        span = self.hi - self.lo if self.hi > self.lo else 1.0
        return np.clip((values - self.lo) / span * 65535.0 + 0.5, 0, 65535).astype(np.uint16)

    def decode(self, image: np.ndarray) -> np.ndarray:
        return self.lo + image.astype(np.float64) / 65535.0 * (self.hi - self.lo)


class Uint16Values:
    """What the formats that hold the values as 16-bit integers (:class:`Uint16Scale`) over the
    video's value range share (PNG16, TIFF, the depth video): run.json records that range as
    ``{key}_range`` with its mapping, and reading them back needs it. A mixin of such a format's
    class, which declares ``key`` and ``value_word`` (the integer's name in the mapping)."""

    readable: ClassVar[bool] = True
    needs_report: ClassVar[bool] = True

    def report(self, out):
        on, key = self.enabled(out.settings), self.key
        return {f"{key}_range": list(out.mapping.value_range) if on else None,
                f"{key}_mapping": (f"value = min + {self.value_word} / 65535 * (max - min), [min, max] = {key}_range"
                                   if on else None)}

    def scale(self, path: Path, report: dict | None) -> Uint16Scale:
        """The range the integers of ``path`` map to, from the run.json beside it (``report``);
        runs from before ``{key}_range`` have only ``depth_range``, the same range."""
        if report is None:
            name = RUN_REPORT.path(path.parent, self.stem_of(path.name) or "").name
            needs = f"the {self.what} needs its {name} beside it" if self.is_file else \
                f"{self.what} need their {name} beside them"
            raise InputError(f"{path}: {needs} (the value range)")
        return Uint16Scale(*(report.get(f"{self.key}_range") or report["depth_range"]))


# ----------------------------------------------------------------------------- the formats
@register("npy")
@dataclass(frozen=True)
class Npy(OutputFormat):
    """float32 ``[N, H, W]``: the values; the prediction's own file, moved, where they are the prediction at its size."""

    readable: ClassVar[bool] = True
    suffix: str = "_pred.npy"
    setting: str = "save_npy"
    flags: tuple[str, ...] = ("--save-npy/--no-save-npy",)
    help: str = "{files}, float32 [N, H, W]. (default: on)"
    default: bool = True
    download: bool = True

    @staticmethod
    def _moved(out: VideoOutput) -> bool:
        return not out.settings.restore_res and not out.mapping.is_depth

    def open(self, out, stack):
        name = out.stem + self.suffix
        if name in out.done or self._moved(out):
            return []
        rows = _NpyRows(stack.enter_context(atomic_path(out.out_dir / name)), (out.frames, *out.size))
        stack.callback(rows.close)
        return [(name, lambda frame: rows.write(frame.values))]

    def finish(self, out):
        name = out.stem + self.suffix
        if name in out.done or not self._moved(out):
            return []
        shutil.move(out.prediction_file(), out.out_dir / name)  # a rename unless --work-dir is on another disk
        return [name]

    def read(self, path, report):
        return read_npy_maps(path)


@register("colour")
@dataclass(frozen=True)
class ColourVideos(OutputFormat):
    """One H.264 video of the prediction per colour map, over the video's range."""

    suffix: str = "_{cmap}.mp4"
    setting: str = "cmaps"
    flags: tuple[str, ...] = ("--cmap", "--color-maps")
    help: str = "Colour maps (matplotlib names), one video each; NAME,NAME or NAME NAME. (default: Spectral_r, Greys_r)"
    default: tuple[str, ...] = ("Spectral_r", "Greys_r")
    download: bool = True

    @property
    def option(self) -> Option:
        return Option(self.flags, self.help, "NAME[,NAME..]", list, parse_names, affects=Affects.FILES,
                      list_form=ListForm.NAMES)  # a colour map's name is in its file's

    def names(self, stem, settings):
        return [stem + self.suffix.format(cmap=cmap) for cmap in settings.cmaps]

    def check(self, settings):
        from rollingdepth.io.visualize import check_cmap

        if not settings.cmaps:
            raise ValueError(f"{self.option.name}: give at least one colour map")
        for name in settings.cmaps:
            try:
                check_cmap(name)
            except ValueError as exc:
                raise ValueError(f"--{exc}") from None

    def open(self, out, stack):
        from rollingdepth.io.visualize import colorize

        lo, hi = out.prediction_range
        writers = []
        for cmap, name in zip(out.settings.cmaps, self.names(out.stem, out.settings)):
            if name not in out.done:
                video = _video(out, stack, name, out.size)
                writers.append((name, lambda f, video=video, cmap=cmap: video.write(colorize(f.prediction, cmap, lo, hi))))
        return writers


@register("sbs")
@dataclass(frozen=True)
class SideBySide(OutputFormat):
    """The input and the first colour map's video side by side, with a white gap."""

    suffix: str = "_rgbd.mp4"
    setting: str = "save_sbs"
    flags: tuple[str, ...] = ("--save-sbs/--no-save-sbs", "--save-side-by-side")
    help: str = "{files}, input and depth side by side; also --save-sbs true|false, like every on/off option. (default: on)"
    default: bool = True
    needs_rgb: bool = True
    download: bool = True

    def open(self, out, stack):
        from rollingdepth.io.visualize import SBS_GAP, colorize, side_by_side

        name = out.stem + self.suffix
        if name in out.done:
            return []
        video = _video(out, stack, name, (out.size[0], 2 * out.size[1] + SBS_GAP))
        cmap, (lo, hi) = out.settings.cmaps[0], out.prediction_range
        return [(name, lambda f: video.write(side_by_side(f.image, colorize(f.prediction, cmap, lo, hi))))]


@dataclass(frozen=True)
class FrameFolder(OutputFormat):
    """A folder ``{stem}{suffix}`` of one file per frame, ``000000{frame_suffix}`` ... (frame numbers from 0
    after ``--from``)."""

    is_file: ClassVar[bool] = False
    frame_suffix: str = ""

    @property
    def files(self) -> str:
        return "{stem}" + self.suffix + f"/000000{self.frame_suffix} ..."

    def every(self, settings) -> int:
        """A file for every this many frames."""
        return 1

    def frame_writer(self, out: VideoOutput) -> Callable[[Path, OutputFrame], None]:
        raise NotImplementedError

    def frame_reader(self, folder: Path, report: dict | None) -> Callable[[Path], np.ndarray]:
        raise NotImplementedError

    def holds_frames(self, path: Path) -> bool:
        return path.is_dir() and any(path.glob(f"*{self.frame_suffix}"))

    def open(self, out, stack):
        name = out.stem + self.suffix
        if name in out.done:
            return []
        folder = stack.enter_context(atomic_dir(out.out_dir / name))
        write, every = self.frame_writer(out), self.every(out.settings)

        def sink(frame: OutputFrame) -> None:
            if frame.index % every == 0:
                write(folder / f"{frame.index:06d}{self.frame_suffix}", frame)

        return [(name, sink)]

    def read(self, path, report):
        files = sorted((p for p in path.iterdir() if p.suffix.lower() == self.frame_suffix), key=natural_key)
        if not files:
            raise InputError(f"{path}: no {self.what} in the folder")
        read = self.frame_reader(path, report)
        frames = [read(p) for p in files]
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise InputError(f"{path}: frames of different sizes {sorted(shapes)}")
        return np.stack(frames)


@dataclass(frozen=True)
class Uint16Frames(Uint16Values, FrameFolder):
    """Frames as single-channel 16-bit images over the video's value range (:class:`Uint16Values`),
    which run.json records as ``{key}_range``."""

    key: str = ""
    exact: bool = False

    @property
    def value_word(self) -> str:
        return self.frame_suffix[1:]  # "png", "tif"

    def write_image(self, path: Path, image: np.ndarray) -> None:
        raise NotImplementedError

    def read_image(self, path: Path) -> np.ndarray | None:
        raise NotImplementedError

    def frame_writer(self, out):
        scale = Uint16Scale(*out.mapping.value_range)
        return lambda path, frame: self.write_image(path, scale.encode(frame.values))

    def frame_reader(self, folder, report):
        scale = self.scale(folder, report)

        def read(path: Path) -> np.ndarray:
            image = self.read_image(path)
            if image is None or image.ndim != 2 or image.dtype != np.uint16:
                raise InputError(f"{path}: not a single-channel 16-bit image")
            return scale.decode(image)

        return read


@register("png16")
@dataclass(frozen=True)
class Png16(Uint16Frames):
    """Single-channel 16-bit PNGs."""

    suffix: str = "_depth16"
    setting: str = "save_png16"
    flags: tuple[str, ...] = ("--save-png16/--no-save-png16",)
    help: str = "{files}, 16-bit PNG per frame; range in run.json (png16_range). (default: off)"
    what: str = "single-channel 16-bit PNG frames"
    download: bool = True
    frame_suffix: str = ".png"
    key: str = "png16"

    def write_image(self, path, image):
        import cv2

        if not cv2.imwrite(str(path), image):
            raise OSError(f"could not write {path.parent.name}/{path.name}")

    def read_image(self, path):
        import cv2

        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@register("exr")
@dataclass(frozen=True)
class Exr(FrameFolder):
    """Scanline EXRs, one float32 channel ``Z``, ZIP-compressed: the values bit for bit."""

    readable: ClassVar[bool] = True
    suffix: str = "_exr"
    setting: str = "save_exr"
    flags: tuple[str, ...] = ("--save-exr/--no-save-exr",)
    help: str = "{files}, float32 EXR per frame, channel Z (needs pip install 'rollingdepth\\[exr]'). (default: off)"
    what: str = "EXR frames"
    frame_suffix: str = ".exr"

    def available(self, what):
        from rollingdepth.io.exports import check_openexr

        check_openexr(what)

    def frame_writer(self, out):
        from rollingdepth.io.exports import write_exr

        return lambda path, frame: write_exr(path, frame.values)

    def frame_reader(self, folder, report):
        from rollingdepth.io.exports import read_exr

        return read_exr


def _finite(value) -> bool:
    """A number (not a bool), finite."""
    import math

    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _ply_settings() -> tuple[tuple[str, Any, Option], ...]:
    """The point clouds' camera and density."""
    return (
        ("fov", None, Option(
            ("--fov",), "Horizontal field of view of the point clouds' pinhole camera. (default: 60)", "DEG",
            kind=float, affects=Affects.OUTPUT)),
        ("focal", None, Option(
            ("--focal",), "Or its focal length in pixels of the input video (scaled to the output size).", "PX",
            kind=float, affects=Affects.OUTPUT)),
        ("ply_stride", 2, Option(
            ("--ply-stride",), "One point every PX pixels in rows and columns. (default: 2)", "PX",
            kind=int, affects=Affects.OUTPUT)))


@register("ply")
@dataclass(frozen=True)
class PointClouds(FrameFolder):
    """Coloured point clouds (binary PLY) of every EVERY-th frame, through the pinhole camera of ``--fov``
    or ``--focal`` (its further settings, with ``--ply-stride``)."""

    suffix: str = "_ply"
    setting: str = "save_ply"
    flags: tuple[str, ...] = ("--save-ply",)
    help: str = "{files}, coloured point cloud (binary PLY) of every EVERY-th frame (default 1: all)"
    default: int = 0
    what: str = "point clouds"
    needs_rgb: bool = True
    needs_depth: bool = True
    frame_suffix: str = ".ply"
    more: tuple[tuple[str, Any, Option], ...] = _ply_settings()

    @property
    def option(self) -> Option:
        """Every how many frames: which frames the folder holds (compared), not only whether it is written."""
        return Option(self.flags, self.help.format(files=self.files), "[EVERY]", int, show_default=False,
                      affects=Affects.OUTPUT, bare="1")

    def every(self, settings):
        return settings.save_ply

    def check(self, settings):
        every, fov, focal, stride = settings.save_ply, settings.fov, settings.focal, settings.ply_stride
        name = lambda field: self.more_option(field)[1].name  # noqa: E731
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"{self.option.name}: {every!r} is not a non-negative integer (every how many frames)")
        if fov is not None and (not _finite(fov) or not 0 < fov < 180):
            raise ValueError(f"{name('fov')}: {fov!r} must be between 0 and 180 degrees")
        if focal is not None and (not _finite(focal) or focal <= 0):
            raise ValueError(f"{name('focal')}: {focal!r} must be > 0 (pixels of the input video)")
        if fov is not None and focal is not None:
            raise ValueError(f"{name('focal')}: give {name('fov')} or {name('focal')}, not both")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"{name('ply_stride')}: {stride!r} must be an integer >= 1")

    def camera(self, out: VideoOutput):
        """The pinhole camera at the output size."""
        from rollingdepth.io.exports import PinholeCamera

        return PinholeCamera.for_size(out.size, out.settings.fov, out.settings.focal, input_width=out.input_width)

    def frame_writer(self, out):
        from rollingdepth.io.exports import point_cloud, write_ply

        camera, stride = self.camera(out), out.settings.ply_stride
        comment = f"rollingdepth {__version__}: {out.stem}, pinhole f={camera.focal:.6g}px, x right, y down, z forward"
        return lambda path, frame: write_ply(path, point_cloud(frame.values, frame.image, camera, stride), comment)

    def report(self, out):
        s = out.settings
        return {"point_cloud": {"every": s.save_ply, "stride": s.ply_stride, **self.camera(out).to_dict()} if s.save_ply
                else None}


@register("snippets")
@dataclass(frozen=True)
class Snippets(OutputFormat):
    """The decoded snippets, ``snippets_{g}.npy`` per dilation, with ``dilations.npy`` and
    ``snippet_lengths.npy``, in an uncompressed npz."""

    suffix: str = "_snippets.npz"
    setting: str = "save_snippets"
    flags: tuple[str, ...] = ("--save-snippets/--no-save-snippets",)
    help: str = "{files}. (default: off)"

    def finish(self, out):
        import zipfile

        name = out.stem + self.suffix
        if name in out.done:
            return []
        with atomic_path(out.out_dir / name) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for key, values in zip(("dilations", "snippet_lengths"), out.snippet_plan):
                buffer = io.BytesIO()
                np.save(buffer, np.array(values))
                z.writestr(f"{key}.npy", buffer.getvalue())
            for g, path in enumerate(out.snippet_maps()):
                z.write(path, f"snippets_{g}.npy")  # stored, no copy in memory
        return [name]


@register("tiff16")
@dataclass(frozen=True)
class Tiff16(Uint16Frames):
    """Single-channel 16-bit grayscale TIFFs (Pillow's I;16, deflate), the PNG16's value mapping."""

    suffix: str = "_tiff16"
    setting: str = "save_tiff"
    flags: tuple[str, ...] = ("--save-tiff/--no-save-tiff",)
    help: str = ("{files}, 16-bit grayscale TIFF per frame, mapped as the PNG16; range in run.json (tiff16_range). "
                 "(default: off)")
    what: str = "single-channel 16-bit TIFF frames"
    frame_suffix: str = ".tif"
    key: str = "tiff16"

    def write_image(self, path, image):
        from PIL import Image, features

        compression = "tiff_adobe_deflate" if features.check("libtiff") else None  # lossless
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint16)).save(path, format="TIFF", compression=compression)

    def read_image(self, path):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return np.asarray(image) if image.mode.startswith("I;16") else None
        except (OSError, UnidentifiedImageError):
            return None


@register("depth_video")
@dataclass(frozen=True)
class DepthVideo(Uint16Values, OutputFormat):
    """The depth as a lossless 16-bit grayscale video (FFV1 in Matroska, :mod:`rollingdepth.io.depth_video`)
    at the source's rate (a variable rate's own frame times), mapped as the PNG16; for editors and compositors."""

    suffix: str = "_depth16.mkv"
    setting: str = "save_depth_video"
    flags: tuple[str, ...] = ("--save-depth-video/--no-save-depth-video",)
    help: str = ("{files}, lossless 16-bit grayscale video (FFV1 in MKV) at the source's rate, mapped as the PNG16; "
                 "range in run.json (depth_video_range). (default: off)")
    what: str = "16-bit depth video"
    download: bool = True
    exact: bool = False
    key: str = "depth_video"
    value_word: str = "v"

    def open(self, out, stack):
        from fractions import Fraction

        from rollingdepth.io.depth_video import DepthVideoWriter

        name = out.stem + self.suffix
        if name in out.done:
            return []
        rate = Fraction(out.fps).limit_denominator(1_000_000)  # exact already for a video; an image folder's float
        path = stack.enter_context(atomic_path(out.out_dir / name))
        video = stack.enter_context(DepthVideoWriter(path, rate, out.size, times=out.frame_times))  # a variable rate's own
        scale = Uint16Scale(*out.mapping.value_range)
        return [(name, lambda frame: video.write(scale.encode(frame.values)))]

    def read(self, path, report):
        from rollingdepth.io.depth_video import read_depth_video

        scale = self.scale(path, report)
        frames = [scale.decode(f) for f in read_depth_video(path)]
        if not frames:
            raise InputError(f"{path}: no frames in the {self.what}")
        return np.stack(frames)


def _stereo_settings() -> tuple[tuple[str, Any, Option], ...]:
    from rollingdepth.io.stereo import DEFAULT_CONVERGENCE, DEFAULT_STRENGTH

    return (
        ("stereo_strength", DEFAULT_STRENGTH, Option(
            ("--stereo-strength",), "Largest disparity between the stereo videos' eyes, in percent of the width "
            f"(0 to 10). (default: {DEFAULT_STRENGTH})", "PERCENT", float, affects=Affects.OUTPUT)),
        ("convergence", DEFAULT_CONVERGENCE, Option(
            ("--convergence",), "The depth on the stereo videos' screen plane: 0 = the farthest (everything comes out "
            f"of the screen), 1 = the nearest (everything lies behind it). (default: {DEFAULT_CONVERGENCE})", "0..1",
            float, affects=Affects.OUTPUT)))


@register("stereo")
@dataclass(frozen=True)
class Stereo(OutputFormat):
    """Stereo 3D videos for VR headsets and 3D TVs (:mod:`rollingdepth.io.stereo`), one per layout, at the
    input's size, from the input and each shot's normalised inverse depth; with the source's sound."""

    suffix: str = "_{tag}.mp4"
    setting: str = "save_stereo"
    flags: tuple[str, ...] = ("--save-stereo",)
    help: str = ("Stereo 3D videos, one per LAYOUT: half-sbs (3D TVs' and players' default), full-sbs, half-tab, "
                 "full-tab, anaglyph (red-cyan); {stem}_3D_hsbs_LR.mp4 etc. (docs/outputs.md). (default: none)")
    default: tuple[str, ...] = ()
    what: str = "stereo 3D videos"
    needs_rgb: bool = True
    download: bool = True
    more: tuple[tuple[str, Any, Option], ...] = _stereo_settings()

    @property
    def option(self) -> Option:
        return Option(self.flags, self.help, "LAYOUT[,LAYOUT..]", list, parse_names, affects=Affects.FILES,
                      list_form=ListForm.NAMES)  # a layout's tag is in its file's name

    def names(self, stem, settings):
        from rollingdepth.io.stereo import LAYOUT_TAGS

        return [stem + self.suffix.format(tag=LAYOUT_TAGS[layout]) for layout in settings.save_stereo or ()
                if layout in LAYOUT_TAGS]

    def check(self, settings):
        from rollingdepth.io.stereo import LAYOUTS

        layouts = settings.save_stereo
        if not isinstance(layouts, (list, tuple)):
            raise ValueError(f"{self.option.name}: give a list of layouts, got {layouts!r}")
        for layout in layouts:
            if layout not in LAYOUTS:
                raise ValueError(f"{self.option.name}: unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
        if len(set(layouts)) != len(layouts):
            raise ValueError(f"{self.option.name}: a layout is given twice: {', '.join(layouts)}")
        strength, convergence = settings.stereo_strength, settings.convergence
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 10:
            raise ValueError(f"{self.more_option('stereo_strength')[1].name}: {strength!r} must be between 0 and 10 "
                             "(percent of the width)")
        if isinstance(convergence, bool) or not isinstance(convergence, (int, float)) or not 0 <= convergence <= 1:
            raise ValueError(f"{self.more_option('convergence')[1].name}: {convergence!r} must be between 0 (the "
                             "farthest depth on the screen) and 1 (the nearest)")

    def open(self, out, stack):
        from rollingdepth.io.stereo import StereoFrames, packed_size, shot_ranges

        todo = [(layout, name) for layout, name in zip(out.settings.save_stereo, self.names(out.stem, out.settings))
                if name not in out.done]
        if not todo:
            return []
        prediction = np.load(out.prediction_file(), mmap_mode="r")  # [N, h, w], complete
        frames = StereoFrames(out.settings.stereo_strength, out.settings.convergence,
                              shot_ranges(prediction, out.shots), out.shots, layouts=len(todo))
        size = out.input_size
        writers = []
        for layout, name in todo:
            video = _video(out, stack, name, packed_size(layout, size))
            writers.append((name, lambda f, video=video, layout=layout: video.write(
                frames.frame(f.index, f.input_image, f.prediction, layout))))
        return writers

    def report(self, out):
        on = self.enabled(out.settings)
        return {"stereo": {"layouts": list(out.settings.save_stereo), "strength_percent": out.settings.stereo_strength,
                           "convergence": out.settings.convergence} if on else None}


# run.json last: it is written last, and its presence marks a finished video
@register("report")
@dataclass(frozen=True)
class RunReport(OutputFormat):
    """The run report: settings, the values used, timings, work done, every file written."""

    suffix: str = "_run.json"
    download: bool = True

    def write(self, out_dir: Path, stem: str, report: dict) -> Path:
        final = self.path(out_dir, stem)
        with atomic_path(final) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        return final

    def load(self, folder: Path, stem: str) -> dict | None:
        """The report of ``stem`` in ``folder``, if there is one."""
        path = self.path(folder, stem)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable run report ({exc})") from None


RUN_REPORT: RunReport = _REGISTRY["report"]  # type: ignore[assignment]


# ----------------------------------------------------------------------------- lists from the registry
def output_formats() -> tuple[OutputFormat, ...]:
    """Every declared format, in the order of their files in a run's report."""
    return tuple(_REGISTRY.values())


def output_format(name: str) -> OutputFormat:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"output format {name!r}: unknown; declared: {', '.join(_REGISTRY)}") from None


def output_settings() -> tuple[str, ...]:
    """The settings that turn formats on, each followed by its further settings, in the registry's order."""
    return tuple(name for f in output_formats() if f.setting for name in (f.setting, *(m[0] for m in f.more)))


def expected_names(stem: str, settings) -> list[str]:
    """The files and folders a finished video has; run.json last."""
    return [name for f in output_formats() for name in f.names(stem, settings)]


def switches(on: Callable[[OutputFormat], bool]) -> dict[str, bool]:
    """Every on/off output setting, on where ``on(format)``."""
    return {f.setting: on(f) for f in output_formats() if f.setting and isinstance(f.default, bool)}


def readable_formats() -> list[OutputFormat]:
    """The formats eval-depth reads, the exact ones first (it takes a stem's first)."""
    return sorted((f for f in output_formats() if f.readable), key=lambda f: not f.exact)


def prediction_patterns(stem: str = "{stem}") -> str:
    """The predictions eval-depth reads, for a message: ``{stem}_pred.npy, {stem}_exr/ or ...``."""
    names = [f"{stem}{f.suffix}{'' if f.is_file else '/'}" for f in readable_formats()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def prediction_format(path: Path) -> OutputFormat | None:
    """The format of a prediction: by its name; a folder of frames that need no run.json (EXR); any
    other file as an npy. None: none of them (a folder of predictions)."""
    for f in readable_formats():
        if f.stem_of(path.name) and path.is_file() == f.is_file:
            return f
    for f in readable_formats():
        if isinstance(f, FrameFolder) and not f.needs_report and f.holds_frames(path):
            return f
    return _REGISTRY["npy"] if path.is_file() else None
