#!/usr/bin/env python
"""Render a synthetic video with exact depth: a camera moving through planes, a box and spheres.

Ray casting in numpy only (no downloads). Writes an RGB video and, when asked, its exact
depth (distance along the optical axis, in scene units) as float32 ``[N, H, W]``.

    python scripts/make_synthetic_scene.py data/samples/synthetic_scene.mp4
    python scripts/make_synthetic_scene.py clip.mp4 --depth-out clip_depth.npy --frames 30 --size 96x160
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAR = 1e9


def _texture(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Procedural texture in [0, 1]: checks plus smooth bands, different per seed."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(1.5, 4.0, size=4)
    check = ((np.floor(u * f[0]) + np.floor(v * f[0])) % 2) * 0.35
    bands = 0.25 * np.sin(u * f[1] * 3.1 + np.cos(v * f[2] * 2.3) * 2.0) + 0.25 * np.sin(v * f[3] * 5.0)
    return np.clip(0.35 + check + bands, 0.0, 1.0)


def _plane(origin, dirs, normal, offset):
    """Ray distances to the plane ``n . p = offset`` (FAR where missed or behind)."""
    denom = dirs @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (offset - origin @ normal) / denom
    return np.where((np.abs(denom) > 1e-9) & (t > 1e-4), t, FAR)


def _sphere(origin, dirs, centre, radius):
    oc = origin - centre
    b = dirs @ oc
    c = oc @ oc - radius**2
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc > 0) & (t > 1e-4), t, FAR)


def _box(origin, dirs, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1, t2 = (lo - origin) * inv, (hi - origin) * inv
    tmin = np.nanmax(np.minimum(t1, t2), axis=-1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=-1)
    return np.where((tmax >= tmin) & (tmin > 1e-4), tmin, FAR)


SPHERES = [((-1.0, -0.35, 5.0), 0.65, (0.9, 0.4, 0.3)), ((1.6, 0.1, 7.5), 1.1, (0.3, 0.6, 0.9)),
           ((0.35, -0.7, 3.6), 0.3, (0.95, 0.85, 0.3))]
BOX = ((-2.9, -1.0, 6.5), (-1.7, 0.6, 7.6), (0.5, 0.8, 0.45))
LIGHT = np.array([0.4, 0.8, -0.45]) / np.linalg.norm([0.4, 0.8, -0.45])


def render(num_frames: int = 72, height: int = 192, width: int = 320):
    """RGB uint8 ``[N, H, W, 3]`` and depth float32 ``[N, H, W]`` (z along the optical axis)."""
    focal = 0.9 * width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cam_dirs = np.stack([(xx - width / 2 + 0.5) / focal, -(yy - height / 2 + 0.5) / focal, np.ones_like(xx)], -1)
    rgbs, depths = [], []
    for i in range(num_frames):
        s = i / max(num_frames - 1, 1)
        origin = np.array([-0.8 + 1.6 * s, 0.15 + 0.1 * np.sin(2 * np.pi * s), 0.6 * s])
        yaw = 0.12 * np.sin(np.pi * s)
        rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        dirs = cam_dirs @ rot.T  # [H, W, 3] world directions
        dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)  # unit rays
        hits = [
            _plane(origin, dirs, np.array([0.0, 1.0, 0.0]), -1.0),  # floor
            _plane(origin, dirs, np.array([0.0, 0.0, 1.0]), 12.0),  # back wall
            _plane(origin, dirs, np.array([1.0, 0.0, 0.0]), -4.5),  # left wall
            _box(origin, dirs, np.array(BOX[0]), np.array(BOX[1])),
        ] + [_sphere(origin, dirs, np.array(c), r) for c, r, _ in SPHERES]
        t = np.stack(hits)  # [objects, H, W]
        which = np.argmin(t, axis=0)
        dist = np.min(t, axis=0)
        dist = np.where(dist >= FAR, 40.0, dist)
        points = origin + dirs * dist[..., None]
        normal = np.zeros_like(points)
        colour = np.zeros_like(points)
        u = np.zeros_like(dist)
        v = np.zeros_like(dist)
        # floor, back wall, left wall
        for k, (n, base, (a, b)) in enumerate([((0, 1, 0), (0.8, 0.75, 0.7), (0, 2)), ((0, 0, -1), (0.7, 0.8, 0.85), (0, 1)),
                                                 ((1, 0, 0), (0.85, 0.7, 0.8), (2, 1))]):
            m = which == k
            normal[m] = n
            u[m], v[m] = points[m][:, a], points[m][:, b]
            colour[m] = np.array(base)
        m = which == 3  # box: normal from the face hit
        if m.any():
            lo, hi = np.array(BOX[0]), np.array(BOX[1])
            p = points[m]
            face = np.argmin(np.minimum(np.abs(p - lo), np.abs(p - hi)), axis=-1)
            sign = np.where(np.abs(p - lo)[np.arange(len(p)), face] < np.abs(p - hi)[np.arange(len(p)), face], -1.0, 1.0)
            nb = np.zeros_like(p)
            nb[np.arange(len(p)), face] = sign
            normal[m] = nb
            u[m], v[m] = p[:, 0] + p[:, 2], p[:, 1] + 0.5 * p[:, 2]
            colour[m] = np.array(BOX[2])
        for j, (c, r, base) in enumerate(SPHERES):
            m = which == 4 + j
            if m.any():
                n = (points[m] - np.array(c)) / r
                normal[m] = n
                u[m] = np.arctan2(n[:, 0], n[:, 2]) * 2.0
                v[m] = np.arcsin(np.clip(n[:, 1], -1, 1)) * 2.0
                colour[m] = np.array(base)
        tex = np.zeros_like(dist)
        for k in range(4 + len(SPHERES)):
            m = which == k
            tex[m] = _texture(u[m], v[m], seed=k)
        shade = 0.35 + 0.65 * np.clip(normal @ LIGHT, 0.0, 1.0)
        fog = np.exp(-dist / 30.0)[..., None]
        rgb = colour * (0.45 + 0.55 * tex[..., None]) * shade[..., None] * fog + (1 - fog) * 0.8
        rgbs.append(np.clip(rgb * 255.0, 0, 255).astype(np.uint8))
        # depth along the optical axis: the camera-space z of the hit point
        forward = rot @ np.array([0.0, 0.0, 1.0])
        depths.append(((points - origin) @ forward).astype(np.float32))
    return np.stack(rgbs), np.stack(depths)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", type=Path, help="video file to write (.mp4)")
    p.add_argument("--frames", type=int, default=72)
    p.add_argument("--size", default="192x320", help="HxW")
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--depth-out", type=Path, default=None, help="also write the exact depth, float32 [N, H, W] .npy")
    args = p.parse_args()
    height, width = (int(x) for x in args.size.lower().split("x"))

    from rollingdepth.io.video_io import VideoWriter, atomic_path

    rgb, depth = render(args.frames, height, width)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as tmp:
        with VideoWriter(tmp, args.fps, (height, width), quality=23) as writer:
            for frame in rgb:
                writer.write(frame)
    if args.depth_out is not None:
        with atomic_path(args.depth_out) as tmp:
            np.save(tmp, depth)
    print(f"wrote {args.output} ({len(rgb)} frames, {height}x{width}, {args.output.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
