"""Depth for other tools: the mapping from the prediction to depth, EXR and PLY files.

RollingDepth predicts affine-invariant inverse depth: near is large, and an unknown scale and
shift separate it from true inverse depth. :class:`DepthMapping` turns it into depth over a
range the user chooses (one mapping for the whole video, so frames stay consistent); the
writers here store a frame as a float32 EXR or, with a pinhole camera, as a coloured point
cloud in binary PLY. No CLI parsing here; the outputs (runtime.outputs) call these per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEPTH_OUT_MODES",
    "EXR_CHANNEL",
    "EXR_EXTRA_HINT",
    "DepthMapping",
    "PinholeCamera",
    "VideoMapping",
    "fit_inverse_depth",
    "check_openexr",
    "point_cloud",
    "read_exr",
    "write_exr",
    "write_ply",
]

DEPTH_OUT_MODES = ("inverse", "depth")  # what --depth-out takes; "fitted" comes from known distances
FAR_LIMIT = 100.0  # fitted depth: at most this many times the farthest known point
EXR_CHANNEL = "Z"  # the conventional name of a depth channel in compositing
EXR_EXTRA_HINT = "pip install 'rollingdepth[exr]'"


# ----------------------------------------------------------------------------- depth mapping
@dataclass(frozen=True)
class DepthMapping:
    """How output values follow from the prediction ``pred`` of one video.

    ``inverse``: the prediction as is. ``depth``: ``pred`` is mapped linearly onto inverse
    depth between ``1/far`` (at the video's minimum ``vmin``) and ``1/near`` (at its maximum
    ``vmax``), and the output is ``depth = 1 / that`` in the units of ``near`` and ``far``.
    """

    mode: str  # "inverse", "depth" or "fitted"
    vmin: float  # the prediction's minimum over the whole video (the shot's, for "fitted")
    vmax: float  # and its maximum
    near: float | None = None
    far: float | None = None  # "fitted": the farthest depth written (inverse depth clipped at 1/far)
    scale: float | None = None  # "fitted": inverse depth = scale * pred + shift
    shift: float | None = None

    def __post_init__(self):
        if self.mode == "fitted":
            if self.scale is None or self.shift is None or self.far is None:
                raise ValueError("scale, shift, far: a fitted mapping needs all three")
            return
        if self.mode not in DEPTH_OUT_MODES:
            raise ValueError(f"depth_out: unknown mode {self.mode!r}; expected inverse or depth")
        if self.mode == "depth":
            if self.near is None or self.far is None:
                raise ValueError("depth_range: depth output needs NEAR and FAR")
            if not (math.isfinite(self.near) and math.isfinite(self.far) and 0 < self.near < self.far):
                raise ValueError(f"depth_range: need 0 < NEAR < FAR, got {self.near}, {self.far}")

    @property
    def is_depth(self) -> bool:
        return self.mode in ("depth", "fitted")

    @property
    def span(self) -> float:
        """``vmax - vmin``, or 1 for a constant prediction (which then maps to ``far``)."""
        return self.vmax - self.vmin if self.vmax > self.vmin else 1.0

    def apply(self, pred: np.ndarray) -> np.ndarray:
        """Output values of float ``[..., H, W]`` prediction as float32 (the input itself for ``inverse``)."""
        if not self.is_depth:
            return pred
        if self.mode == "fitted":
            inverse = np.maximum(self.scale * np.asarray(pred, dtype=np.float64) + self.shift, 1.0 / self.far)
            return (1.0 / inverse).astype(np.float32)
        inv_far, inv_near = 1.0 / self.far, 1.0 / self.near
        t = (np.asarray(pred, dtype=np.float64) - self.vmin) / self.span  # 0 at vmin, 1 at vmax
        inverse = inv_far + np.clip(t, 0.0, 1.0) * (inv_near - inv_far)
        return (1.0 / inverse).astype(np.float32)

    def to_inverse(self, values: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`: output values -> the prediction (float64 for depth; exact where
        ``apply`` did not clip), so that every mode of a run scores as its prediction does."""
        if not self.is_depth:
            return values
        inverse = 1.0 / np.asarray(values, dtype=np.float64)
        if self.mode == "fitted":
            return (inverse - self.shift) / self.scale
        inv_far, inv_near = 1.0 / self.far, 1.0 / self.near
        return self.vmin + (inverse - inv_far) / (inv_near - inv_far) * self.span

    @classmethod
    def from_dict(cls, entry: dict) -> "DepthMapping":
        """The mapping a run report recorded (:meth:`to_dict`)."""
        return cls(entry["mode"], entry.get("prediction_min", 0.0), entry.get("prediction_max", 1.0), near=entry.get("near"),
                   far=entry.get("far"), scale=entry.get("scale"), shift=entry.get("shift"))

    @property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest output value (what a 16-bit PNG spans)."""
        if self.mode == "fitted":
            ends = self.apply(np.array([self.vmax, self.vmin]))
            return float(ends[0]), float(ends[1])
        return (float(self.near), float(self.far)) if self.is_depth else (float(self.vmin), float(self.vmax))

    @property
    def formula(self) -> str:
        """The exact mapping, with this video's numbers, for the run report."""
        if not self.is_depth:
            return "value = pred (affine-invariant inverse depth, near = large)"
        if self.mode == "fitted":
            return (f"depth = 1 / max(scale * pred + shift, 1/far), scale = {self.scale!r}, shift = {self.shift!r}, "
                    f"far = {self.far!r} (fitted to the known distances)")
        return (f"depth = 1 / (1/far + (pred - min) / (max - min) * (1/near - 1/far)), "
                f"near = {self.near!r}, far = {self.far!r}, min = {self.vmin!r}, max = {self.vmax!r} "
                f"(the prediction's range over the video)")

    def to_dict(self) -> dict:
        fitted = {"scale": self.scale, "shift": self.shift} if self.mode == "fitted" else {}
        return {"mode": self.mode, "near": self.near, "far": self.far, **fitted, "prediction_min": self.vmin,
                "prediction_max": self.vmax, "value_range": list(self.value_range), "formula": self.formula}


def fit_inverse_depth(pred: np.ndarray, depth: np.ndarray) -> tuple[float, float]:
    """``(scale, shift)`` with ``1 / depth ~ scale * pred + shift`` by least squares over the
    points (``pred``: the prediction at each point). ``ValueError`` when the points cannot fix a
    scale (fewer than two distinct predictions) or the fit inverts the order of depth."""
    pred, inverse = np.asarray(pred, np.float64), 1.0 / np.asarray(depth, np.float64)
    if len(pred) < 2 or np.ptp(pred) <= 1e-9:
        raise ValueError("the known distances need at least two points where the prediction differs")
    scale, shift = np.polyfit(pred, inverse, 1)
    if scale <= 0:
        raise ValueError("the known distances contradict the prediction: the points it sees nearer are given "
                         "farther (check x, y and the frame numbers)")
    return float(scale), float(shift)


@dataclass(frozen=True)
class VideoMapping:
    """The mapping of each frame of a video: ``mappings[k]`` from frame ``firsts[k]`` on (one per
    shot with known distances; one for the whole video otherwise)."""

    mappings: tuple[DepthMapping, ...]
    firsts: tuple[int, ...] = (0,)

    def at(self, frame: int) -> DepthMapping:
        import bisect

        return self.mappings[bisect.bisect_right(self.firsts, frame) - 1]

    @property
    def is_depth(self) -> bool:
        return self.mappings[0].is_depth

    @property
    def value_range(self) -> tuple[float, float]:
        ranges = [m.value_range for m in self.mappings]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def to_inverse(self, values: np.ndarray) -> np.ndarray:
        """Output values ``[N, H, W]`` -> the prediction, each frame by its shot's mapping."""
        if not self.is_depth:
            return values
        out = np.empty(np.shape(values), dtype=np.float64)
        starts, ends = (0, *self.firsts[1:]), (*self.firsts[1:], len(out))
        for mapping, first, end in zip(self.mappings, starts, ends):
            out[first:end] = mapping.to_inverse(values[first:end])
        return out

    @classmethod
    def from_dict(cls, entry: dict) -> "VideoMapping":
        """The mapping a run report recorded as ``depth_output`` (:meth:`to_dict`)."""
        if entry.get("mode") != "per shot":
            return cls((DepthMapping.from_dict(entry),))
        shots = entry["shots"]
        return cls(tuple(DepthMapping.from_dict(s) for s in shots), tuple(int(s["first"]) for s in shots))

    def to_dict(self) -> dict:
        if len(self.mappings) == 1:
            return self.mappings[0].to_dict()
        return {"mode": "per shot", "value_range": list(self.value_range),
                "shots": [{"first": f, **m.to_dict()} for f, m in zip(self.firsts, self.mappings)]}


# ----------------------------------------------------------------------------- EXR
def check_openexr(option: str = "EXR") -> None:
    """Raise ``ValueError`` naming ``option`` (what needs them, e.g. the command's option) and the
    extra when the OpenEXR bindings are missing."""
    try:
        import OpenEXR
    except ImportError:
        raise ValueError(f"{option}: needs the OpenEXR Python bindings; install them with {EXR_EXTRA_HINT}") from None
    if not hasattr(OpenEXR, "File"):  # the numpy API came with 3.3
        raise ValueError(f"{option}: needs OpenEXR 3.3 or newer; install it with {EXR_EXTRA_HINT}")


def write_exr(path: Path, depth: np.ndarray) -> None:
    """One float32 ``[H, W]`` map as a single-channel (``Z``) scanline EXR, ZIP-compressed (lossless)."""
    check_openexr("EXR")
    import OpenEXR

    data = np.ascontiguousarray(depth, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"depth: expected [H, W], got shape {data.shape}")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {EXR_CHANNEL: data}) as f:
        f.write(str(path))


def read_exr(path: Path) -> np.ndarray:
    """float32 ``[H, W]`` from an EXR: its ``Z`` channel, or its only channel."""
    check_openexr("EXR")
    import OpenEXR

    try:
        with OpenEXR.File(str(path)) as f:
            channels = f.channels()
            if EXR_CHANNEL in channels:
                pixels = channels[EXR_CHANNEL].pixels
            elif len(channels) == 1:
                pixels = next(iter(channels.values())).pixels
            else:
                raise ValueError(f"{path}: no {EXR_CHANNEL} channel among {sorted(channels)}")
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable EXR file ({' '.join(str(exc).split())})") from None
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel image, got shape {pixels.shape}")
    return np.asarray(pixels, dtype=np.float32)


# ----------------------------------------------------------------------------- point clouds
@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera at the origin looking along +z (x right, y down, as OpenCV and Open3D).

    Pixel ``(u, v)`` (column, row; centre at ``u + 0.5``) with depth ``z`` is the point
    ``x = (u + 0.5 - cx) * z / f``, ``y = (v + 0.5 - cy) * z / f``, ``z``; ``cx = W / 2``,
    ``cy = H / 2``.
    """

    focal: float  # pixels, at the output size
    cx: float
    cy: float

    @classmethod
    def for_size(cls, size: tuple[int, int], fov_deg: float | None = None, focal_px: float | None = None,
                 input_width: int | None = None) -> "PinholeCamera":
        """The camera of an ``(H, W)`` output: from the horizontal field of view (default 60
        degrees), or from a focal length in pixels of the input video (``input_width`` wide),
        scaled to the output."""
        h, w = size
        if focal_px is not None:
            if not focal_px > 0:
                raise ValueError(f"focal: must be > 0, got {focal_px}")
            focal = focal_px * w / (input_width or w)
        else:
            fov = 60.0 if fov_deg is None else float(fov_deg)
            if not 0 < fov < 180:
                raise ValueError(f"fov: must be between 0 and 180 degrees, got {fov}")
            focal = (w / 2.0) / math.tan(math.radians(fov) / 2.0)
        return cls(focal=float(focal), cx=w / 2.0, cy=h / 2.0)

    def to_dict(self) -> dict:
        return {"focal_px": self.focal, "cx": self.cx, "cy": self.cy, "axes": "x right, y down, z forward (OpenCV)",
                "formula": "x = (u + 0.5 - cx) * z / f, y = (v + 0.5 - cy) * z / f, z = depth at pixel (u, v)"}


PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def point_cloud(depth: np.ndarray, rgb: np.ndarray, camera: PinholeCamera, stride: int = 2) -> np.ndarray:
    """Points of every ``stride``-th pixel (rows and columns from 0) with finite, positive depth,
    as a structured array of ``PLY_DTYPE`` (x, y, z float32; red, green, blue uint8).

    ``depth``: ``[H, W]``; ``rgb``: uint8 ``[H, W, 3]`` at the same size.
    """
    if stride < 1:
        raise ValueError(f"stride: must be >= 1, got {stride}")
    if rgb.shape[:2] != depth.shape:
        raise ValueError(f"rgb: size {rgb.shape[:2]} differs from the depth's {depth.shape}")
    z = np.asarray(depth[::stride, ::stride], dtype=np.float64)  # [h, w]
    v, u = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride].astype(np.float64)
    keep = np.isfinite(z) & (z > 0)
    z, u, v = z[keep], u[keep], v[keep]
    points = np.empty(z.shape[0], dtype=PLY_DTYPE)
    points["x"] = (u + 0.5 - camera.cx) * z / camera.focal
    points["y"] = (v + 0.5 - camera.cy) * z / camera.focal
    points["z"] = z
    colours = rgb[::stride, ::stride][keep]  # [P, 3]
    points["red"], points["green"], points["blue"] = colours[:, 0], colours[:, 1], colours[:, 2]
    return points


def write_ply(path: Path, points: np.ndarray, comment: str | None = None) -> None:
    """Points of ``PLY_DTYPE`` as a binary little-endian PLY (readable by Open3D, MeshLab, Blender)."""
    points = np.ascontiguousarray(points, dtype=PLY_DTYPE)
    lines = ["ply", "format binary_little_endian 1.0"]
    if comment:
        lines.append(f"comment {' '.join(comment.split())}")
    lines.append(f"element vertex {points.shape[0]}")
    lines += [f"property float {c}" for c in ("x", "y", "z")]
    lines += [f"property uchar {c}" for c in ("red", "green", "blue")]
    lines.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("ascii", "replace"))  # a comment may name a non-ASCII file
        f.write(points.tobytes())

