"""The host floor: what a run-video run costs besides the models.

``rollingdepth.runtime.video_job.process_video`` (run-video's work for one video) with the fast preset on
a synthetic clip, with stand-ins for the UNet and the VAE that return tensors of the right
shapes at near-zero cost (the pipeline's ``encode``, ``denoise_snippets`` and
``decode_depth`` replaced on one small random pipeline). What is left is the host's work: decoding the input,
resizing, copies, the store, subsampling, co-alignment, merge, re-normalisation and writing.

Each output set runs in its own process (under run-video's heap setting), timed whole: wall
and CPU seconds from interpreter start to exit, beside the run report's per-stage seconds.

    python benchmarks/bench_host.py                                   # 250 frames, 432x768
    python benchmarks/bench_host.py --frames 40 --outputs default png16
    python benchmarks/bench_host.py --device cuda                     # the floor beside a GPU

Output sets: ``default`` (npy, two colour videos, side by side), ``png16`` (+ --save-png16),
``exr`` (+ --save-exr, needs OpenEXR), ``ply`` (+ --save-ply --depth-out depth --depth-range 0.5,20).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from common import REPO, machine

OUTPUTS = {
    "default": {},
    "png16": {"save_png16": True},
    "exr": {"save_exr": True},
    "ply": {"save_ply": 1, "depth_out": "depth", "depth_range": [0.5, 20.0]},
}
STAGES = ("encode", "snippets", "decode", "coalign", "merge", "write")  # merge includes re-normalisation


def make_clip(path: Path, frames: int, height: int, width: int, **encoding) -> None:
    """A moving pattern (smooth gradients, drifting stripes, a little noise) as H.264
    (``encoding``: VideoWriter's ``quality`` and ``speed``, its defaults when not given)."""
    from rollingdepth.io.video_io import VideoWriter

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with VideoWriter(path, 24, (height, width), **encoding) as writer:
        for i in range(frames):
            r = 127 + 100 * np.sin(xx / 37.0 + 0.05 * i)
            g = 255 * yy / height
            b = 127 + 100 * np.cos((xx + yy) / 53.0 - 0.03 * i)
            frame = np.stack([r, g, b], -1) + rng.normal(0, 4, (height, width, 1))
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))


def stand_in_pipeline(device: str, dtype: str = "fp32"):
    """The ``micro`` random pipeline with its models replaced by cheap functions of the right
    shapes: encode ``[B, 3, H, W] -> [B, 4, H/8, W/8]`` (every 8th pixel), UNet step ``->
    [B*n, 4, h, w]`` (a blend), decode ``[B, 4, h, w] -> [B, H, W]`` (a smooth map moved by
    each frame's mean latent)."""
    import torch

    from common import random_pipeline

    pipe = random_pipeline("micro", {"fp32": torch.float32, "fp16": torch.float16}[dtype], device)

    def encode(self, images):  # [B, 3, H, W] in [-1, 1]
        x = self._pad(images).to(device=self.vae.device, dtype=self.vae.dtype)
        return torch.cat([x[:, :, ::8, ::8], x[:, :1, ::8, ::8]], dim=1)  # [B, 4, h, w]

    def denoise_snippets(self, rgb_latents, depth_latents, timestep, num_view, attn_span=None):
        return 0.5 * depth_latents + 0.5 * rgb_latents  # [B*n, 4, h, w]

    ramps = {}

    def decode_depth(self, latents, size):
        # a fixed smooth map plus each frame's mean latent: one fresh [B, H, W] tensor, written once
        # (upsampling the latent took 2 to 3 times longer, model time that a GPU would spend)
        if size not in ramps:
            yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0]), torch.linspace(-1, 1, size[1]), indexing="ij")
            ramps[size] = (0.5 * xx + 0.3 * yy * yy).to(latents.device, latents.dtype)  # [H, W]
        return torch.add(ramps[size], latents[:, :1].mean(dim=(1, 2, 3))[:, None, None])  # [B, H, W], latents' dtype

    pipe.encode = types.MethodType(encode, pipe)
    pipe.denoise_snippets = types.MethodType(denoise_snippets, pipe)
    pipe.decode_depth = types.MethodType(decode_depth, pipe)
    return pipe


def child(args) -> None:
    """One run in this process: prints the run report's timings as one JSON line."""
    from rollingdepth.runtime.run_config import RunConfig
    from rollingdepth.runtime.heap import limit_heap_growth
    from rollingdepth.runtime.video_job import _estimate, process_video
    from rollingdepth.io.video_io import load_source

    limit_heap_growth()  # as run-video does
    pipe = stand_in_pipeline(args.device, args.dtype)
    cfg = RunConfig.build("fast", {"device": args.device, **OUTPUTS[args.child]})
    source = load_source(Path(args.clip))
    # run-video says the run's estimate once, before the first video; the video's run reuses it
    t0 = time.perf_counter()
    _estimate(pipe, source.frame_count, source, cfg)
    estimate_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(dir=args.tmp) as out:
        t0 = time.perf_counter()
        process_video(pipe, source, Path(out), cfg, lambda *a, **k: None)
        run_seconds = time.perf_counter() - t0
        report = json.loads((Path(out) / f"{source.stem}_run.json").read_text())
    print(json.dumps({"run_seconds": run_seconds, "estimate_seconds": estimate_seconds, "timings": report["timings"],
                      "frames": report["frames"]}))


def run_case(name: str, clip: Path, args) -> dict:
    """``name``'s output set in a child process: its report, wall and CPU seconds."""
    # the previous case's files (GBs, deleted or not) are still being written back to the disk:
    # wait for that first, so that each case pays the kernel's writeback for its own writes only
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", name, "--clip", str(clip), "--device", args.device, "--tmp", args.tmp,
           "--dtype", args.dtype]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench_host: the {name} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(process_wall=wall, process_cpu=after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--size", default="432x768", help="HxW of the clip (the fast preset processes at 768)")
    p.add_argument("--outputs", nargs="+", default=list(OUTPUTS), choices=list(OUTPUTS))
    p.add_argument("--device", default="cpu", help="where the stand-ins' tensors live (cpu, cuda)")
    p.add_argument("--dtype", default="fp16", choices=["fp32", "fp16"],
                   help="the stand-ins' dtype: fp16 is the fast preset's on a GPU (the store then keeps the decoded "
                        "maps and latents in float16, half the bytes); fp32 is a CPU run's without native bf16")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--tmp", default=None, help="folder for the clip and the outputs (default: the system's)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--clip", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if "exr" in args.outputs:
        from rollingdepth.io.exports import check_openexr

        try:
            check_openexr()
        except ValueError as exc:
            print(f"bench_host: skipping exr ({exc})")
            args.outputs.remove("exr")
    height, width = (int(v) for v in args.size.lower().split("x"))
    print(f"host floor: {args.frames} frames {height}x{width}, fast preset, stand-in models on {args.device} in {args.dtype}; "
          f"{machine()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames, height, width)
        args.tmp = args.tmp or tempfile.gettempdir()
        header = (f"{'outputs':8s} {'process':>8s} {'CPU':>7s} {'run':>7s} {'floor':>7s} "
                  + " ".join(f"{s:>8s}" for s in (*STAGES, "other", "estimate")))
        print(header)
        for name in args.outputs:
            r = results[name] = run_case(name, clip, args)
            r["floor"] = r["run_seconds"] - r["timings"].get("coalign", 0.0)
            r["other"] = r["run_seconds"] - sum(r["timings"].get(s, 0.0) for s in STAGES)
            stages = " ".join(f"{r['timings'].get(s, float('nan')):8.1f}" for s in STAGES)
            print(f"{name:8s} {r['process_wall']:8.1f} {r['process_cpu']:7.1f} {r['run_seconds']:7.1f} "
                  f"{r['floor']:7.1f} {stages} {r['other']:8.1f} {r['estimate_seconds']:8.1f}", flush=True)
    print("seconds: process = the whole child process (start, imports, stand-ins, run, exit), wall; CPU = its "
          "user+system time; run = process_video; floor = run without co-alignment (on the GPU in a GPU run); "
          "stages from the run report (timings); other = the rest of the run (the shots pass, opening the store); "
          "estimate = the time estimate, computed once per run before the first video (outside the run)")
    print("beside each other: the input is decoded in a thread ahead of the encoder (and of the shots pass); "
          "decoded maps are written to the store by a thread behind the decoder; the merge reads maps ahead in "
          "a thread and writes merged windows behind; each output file is written by its own thread, each "
          "video by its own ffmpeg process")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
