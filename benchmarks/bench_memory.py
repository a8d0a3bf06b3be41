"""Peak memory against video length for the streaming pipeline.

Runs the same synthetic clip (a textured pan, generated frame by frame: no file is held) at
N = 300, 1000 and 3000 frames through ``predict_streaming`` with a randomly initialised model
of the real structure (VAE downscale 8, small channel counts), each N in a fresh process.
Prints peak host RSS (and peak CUDA memory where there is a GPU), the slope in MB per frame,
that slope scaled to a 768 x 432 processing size, and the projected peak for 10,000 frames.

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --frames 300 1000 3000 --size 64x112 --refine-step 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import machine, peak_rss_mb, random_pipeline, write_reports


def frames(n: int, h: int, w: int):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w * 3, 3), dtype=np.uint8)
    for i in range(n):
        x = (i * 2) % (2 * w)
        yield base[:, x : x + w]


def worker(args) -> dict:
    from rollingdepth.streaming import limit_heap_growth, predict_streaming

    if not args.no_heap_limit:
        limit_heap_growth()  # as run-video does
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = random_pipeline("small", torch.float32, device)
    h, w = args.size
    base = peak_rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        def make(n, hh, ww):
            return np.lib.format.open_memmap(Path(tmp) / "out.npy", mode="w+", dtype=np.float32, shape=(n, hh, ww))

        result = predict_streaming(pipe, frames(args.n, h, w), make, workdir=Path(tmp), processing_res=0,
                                   dilations=[1, 10, 25], snippet_lengths=[3], refine_step=args.refine_step,
                                   unet_batch_size=16, max_vae_bs=16, num_frames_hint=args.n)
    return {
        "frames": args.n,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": base,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "processing_size": list(result.size),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[300, 1000, 3000])
    p.add_argument("--size", default="64x112", help="HxW of the frames (processed at this size)")
    p.add_argument("--refine-step", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--no-heap-limit", action="store_true", help="leave glibc's malloc settings alone (to see its growth)")
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.n is not None:
        print(json.dumps(worker(args)))
        return

    rows, results = [], []
    for n in args.frames:
        cmd = [sys.executable, __file__, "--n", str(n), "--size", f"{args.size[0]}x{args.size[1]}", "--refine-step", str(args.refine_step)]
        cmd += ["--no-heap-limit"] if args.no_heap_limit else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        rows.append([n, f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}", "-" if r["peak_cuda_mb"] is None else f"{r['peak_cuda_mb']:.0f}"])
        print(f"N={n}: peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f} s", flush=True)
    ns = np.array([r["frames"] for r in results], float)
    rss = np.array([r["peak_rss_mb"] for r in results])
    slope, intercept = np.polyfit(ns, rss, 1)
    scale = (768 * 432) / (args.size[0] * args.size[1])
    slope_768 = slope * scale
    projected = intercept + slope_768 * 10_000
    cuda = [r["peak_cuda_mb"] for r in results]
    summary = {
        "slope_mb_per_frame": slope,
        "slope_mb_per_frame_at_768x432": slope_768,
        "intercept_mb": intercept,
        "projected_peak_mb_10000_frames_at_768x432": projected,
        "cuda_growth_mb": (cuda[-1] - cuda[0]) if cuda[0] is not None else None,
    }
    print(f"slope: {slope * 1024:.1f} kB/frame at {args.size[0]}x{args.size[1]}; scaled to 768x432 "
          f"(x{scale:.0f} pixels): {slope_768:.3f} MB/frame (bound 0.5); projected peak for 10,000 frames "
          f"at 768x432: {projected / 1024:.1f} GB (this model's {intercept:.0f} MB base + frames)")
    title = (f"Peak memory vs. frames: streaming, random small model (VAE /8), {args.size[0]}x{args.size[1]}, "
             f"dilations 1/10/25, n=3, refine {args.refine_step}; {machine()}")
    write_reports(args.out, "bench_memory", {"title": title, "results": results, "summary": summary},
                  ["frames", "seconds", "peak RSS MB", "peak CUDA MB"], rows)


if __name__ == "__main__":
    main()
