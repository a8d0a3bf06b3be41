"""Peak memory against video length for the method as run-video runs it.

Runs the same synthetic clip (a textured pan, generated frame by frame: no file is held) at
N = 300, 1000 and 3000 frames through ``rollingdepth.runtime.passes.run`` over a ``DiskStore`` (writing its ``.npy``
and the decoded snippets as run-video does) with a randomly initialised model of the real structure (VAE downscale 8, small channel
counts), each N in a fresh process. Prints peak host RSS during the run (the
high-water mark is reset once the model is loaded, on Linux), peak CUDA memory where there
is a GPU, the slope in MB per frame, that slope at a 768 x 432 processing size, and the
projected peak for 10,000 frames. With several ``--size`` values the slope is fitted as a
fixed part plus a part proportional to pixels, so that 768 x 432 is not reached by scaling
everything with pixels (which overstates it).

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --size 64x112 128x224 --frames 300 1000 3000
    python benchmarks/bench_memory.py --size 432x768 --frames 100 300   # the real size: slow on a CPU
    python benchmarks/bench_memory.py --frames 1000 8000 --segment-frames 1000   # long shots in segments
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

from common import current_rss_mb, machine, peak_rss_mb, random_pipeline, reset_peak_rss, write_reports


def frames(n: int, h: int, w: int):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w * 3, 3), dtype=np.uint8)
    for i in range(n):
        x = (i * 2) % (2 * w)
        yield base[:, x : x + w]


# A stage whose last progress call says it is complete hands over at that call: otherwise its
# peak would include the next stage's first batch (the next stage's first progress call comes
# after that batch), whose fixed transient buffers can hide the finished stage's growth.
HANDS_OVER = {"encode": "snippets", "coalign": "merge"}


def run_video(pipe, store, settings, args, on_stage):
    """The run as run-video makes it: one run of the method, or (``--segment-frames``) one shot in
    segments of at most that many frames, the frames read forward once."""
    import itertools

    from rollingdepth.io.shots import Shot
    from rollingdepth.runtime.passes import run
    from rollingdepth.runtime.plan import plan_units
    from rollingdepth.runtime.units import FrameCursor, UnitsJob, run_units

    h, w = args.size
    units = plan_units([(0, args.n)], args.segment_frames)
    if len(units) == 1:
        return run(pipe, frames(args.n, h, w), store, settings, num_frames_hint=args.n, callback=on_stage)
    cursor = FrameCursor(lambda first: itertools.islice(frames(args.n, h, w), first, None), spill_dir=store.workdir)
    return run_units(pipe, store, settings, UnitsJob([Shot(0, args.n, "start")], units, cursor, lambda: None, on_stage))


def worker(args) -> dict:
    from rollingdepth.frontends.progress import split_unit
    from rollingdepth.runtime.heap import limit_heap_growth
    from rollingdepth.method.settings import MethodSettings
    from rollingdepth.runtime.stores import DiskStore

    if not args.no_heap_limit:
        limit_heap_growth()  # as run-video does
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.layout == "stand-in":  # the micro model with near-zero-cost stand-ins (bench_host.py): long clips fast
        from bench_host import stand_in_pipeline

        pipe = stand_in_pipeline(device)
    else:
        pipe = random_pipeline(args.layout, torch.float32, device)
    h, w = args.size
    # the high-water mark starts here (model loaded), so that loading's own peak cannot hide the run's
    reset = reset_peak_rss()
    base = current_rss_mb() if reset else peak_rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stage_peaks: dict[str, float] = {}
    stage_held: dict[str, float] = {}  # resident set as each stage ends: what it keeps, without transients
    current = ["encode"]  # the high-water mark was reset just before the run

    trace = []  # (seconds, stage, done, total, resident MB) at every progress call

    def on_stage(stage, done, total):
        """At each change of stage: the finished stage's peak RSS, then a new high-water mark."""
        trace.append((round(time.perf_counter() - t0, 3), stage, done, total, current_rss_mb("VmRSS")))
        stage = split_unit(stage)[1].split(" d=")[0]  # "shot 1/1 segment 2/8 snippets d=10" -> "snippets"
        if stage in HANDS_OVER and total and done >= total:
            stage = HANDS_OVER[stage]  # finished: what follows is the next stage's first batch
        if stage != current[0] and reset:
            stage_peaks[current[0]] = max(stage_peaks.get(current[0], 0.0), current_rss_mb("VmHWM"))
            stage_held[current[0]] = current_rss_mb("VmRSS")
            reset_peak_rss()
            current[0] = stage

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # as run-video runs it: a DiskStore in a work folder, the .npy written by rows with file I/O
        settings = MethodSettings(processing_res=0, dilations=args.dilations, snippet_lengths=[3],
                                  refine_step=args.refine_step, unet_batch_size=16, max_vae_bs=16).validate()
        result = run_video(pipe, DiskStore(Path(tmp)), settings, args, on_stage)
    on_stage("end", 0, 0)
    return {
        "frames": args.n,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": max(stage_peaks.values()) if stage_peaks else peak_rss_mb(),
        "stage_peak_rss_mb": stage_peaks,
        "stage_end_rss_mb": stage_held,
        "rss_trace": trace,
        "rss_before_mb": base,
        "peak_reset": reset,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "processing_size": list(result.size),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[300, 1000, 3000])
    p.add_argument("--size", nargs="+", default=["64x112"],
                   help="HxW of the frames (processed at this size); with two or more, the per-frame slope is "
                        "fitted as a + b * pixels and extrapolated to 768x432")
    p.add_argument("--layout", default="micro", choices=["micro", "small", "stand-in"],
                   help="random model (VAE downscale 8 in both), or the micro one with stand-ins of near-zero cost for "
                        "its UNet and VAE (the host's memory is what is measured)")
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 10, 25])
    p.add_argument("--refine-step", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--segment-frames", type=int, default=0,
                   help="process the clip in segments of at most this many frames, as run-video does (0: one piece)")
    p.add_argument("--no-heap-limit", action="store_true", help="leave glibc's malloc settings alone (to see its growth)")
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.n is None and len(set(args.frames)) < 2:
        p.error("--frames: give at least two lengths (the slope is fitted)")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size]
    if args.n is not None:
        args.size = sizes[0]
        print(json.dumps(worker(args)))
        return

    rows, results, slopes = [], [], []
    target = 768 * 432
    for h, w in sizes:
        per_size = []
        for n in args.frames:
            cmd = [sys.executable, __file__, "--n", str(n), "--size", f"{h}x{w}", "--refine-step", str(args.refine_step),
                   "--layout", args.layout, "--dilations", *map(str, args.dilations),
                   "--segment-frames", str(args.segment_frames)]
            cmd += ["--no-heap-limit"] if args.no_heap_limit else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            per_size.append(r)
            rows.append([f"{h}x{w}", n, f"{r['seconds']:.1f}", f"{r['rss_before_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
                         "-" if r["peak_cuda_mb"] is None else f"{r['peak_cuda_mb']:.0f}"])
            print(f"{h}x{w} N={n}: RSS {r['rss_before_mb']:.0f} MB before the run, peak {r['peak_rss_mb']:.0f} MB; "
                  f"{r['seconds']:.1f} s", flush=True)
        results += per_size
        ns = np.array([r["frames"] for r in per_size], float)
        slope, intercept = np.polyfit(ns, np.array([r["peak_rss_mb"] for r in per_size]), 1)
        # the overall peak can sit in a stage whose memory does not depend on N and hide the
        # growth of another: take the steepest stage's slope when it is steeper
        stages = set.intersection(*(set(r.get("stage_peak_rss_mb") or {}) for r in per_size))
        stage_fits = {st: np.polyfit(ns, [r["stage_peak_rss_mb"][st] for r in per_size], 1) for st in sorted(stages)}
        stage_slopes = {st: float(fit[0]) for st, fit in stage_fits.items()}
        # at 10,000 frames: the stage whose peak is then highest (not necessarily the steepest)
        at_10000 = max((float(a * 10_000 + b) for a, b in stage_fits.values()), default=None)
        if stage_slopes:
            print("  per-stage peak growth, kB/frame: " + ", ".join(f"{k} {v * 1024:.1f}" for k, v in stage_slopes.items()))
            held = set.intersection(*(set(r.get("stage_end_rss_mb") or {}) for r in per_size))
            held_slopes = {st: float(np.polyfit(ns, [r["stage_end_rss_mb"][st] for r in per_size], 1)[0]) for st in sorted(held)}
            print("  resident at each stage's end, growth kB/frame: "
                  + ", ".join(f"{k} {v * 1024:.1f}" for k, v in held_slopes.items()))
            steepest = max(stage_slopes, key=stage_slopes.get)
            if stage_slopes[steepest] > slope:
                slope = stage_slopes[steepest]
                intercept = float(np.polyfit(ns, [r["stage_peak_rss_mb"][steepest] for r in per_size], 1)[1])
        cuda = [r["peak_cuda_mb"] for r in per_size]
        slopes.append({"size": [h, w], "pixels": h * w, "slope_mb_per_frame": slope, "intercept_mb": intercept,
                       "stage_slopes_mb_per_frame": stage_slopes,
                       "stage_end_slopes_mb_per_frame": held_slopes if stage_slopes else {},
                       "slope_scaled_to_768x432": slope * target / (h * w),
                       "stages_peak_mb_10000_frames": at_10000,
                       "cuda_growth_mb": (cuda[-1] - cuda[0]) if cuda[0] is not None else None})
        print(f"{h}x{w}: {slope * 1024:.1f} kB/frame; scaled by pixels to 768x432 (x{target / (h * w):.1f}): "
              f"{slope * target / (h * w):.3f} MB/frame", flush=True)
    summary = {"per_size": slopes}
    largest = max(slopes, key=lambda r: r["pixels"])
    estimate = largest["slope_scaled_to_768x432"]  # all growth taken as proportional to pixels (an upper bound)
    how = f"the {largest['size'][0]}x{largest['size'][1]} slope scaled by pixels"
    if len(slopes) >= 2:
        b, a = np.polyfit([r["pixels"] for r in slopes], [r["slope_mb_per_frame"] for r in slopes], 1)
        summary["fit_mb_per_frame"] = {"per_pixel": b, "fixed": a}
        estimate = a + b * target
        how = f"fitted a + b * pixels over {len(slopes)} sizes: a = {a * 1024:.2f} kB, b = {b * 2**20:.3f} B/pixel"
    projected = largest["intercept_mb"] + estimate * 10_000
    if largest["pixels"] == target and largest["stages_peak_mb_10000_frames"] is not None:
        projected = largest["stages_peak_mb_10000_frames"]  # measured at 768x432: each stage's own line
    summary.update({"slope_mb_per_frame_at_768x432": estimate, "estimate": how,
                    "projected_peak_mb_10000_frames_at_768x432": projected})
    print(f"slope at 768x432: {estimate:.3f} MB/frame (bound 0.5; {how}); projected peak for 10,000 frames at "
          f"768x432: {projected / 1024:.1f} GB (this model's {largest['intercept_mb']:.0f} MB base + frames)")
    segments = f", segments of at most {args.segment_frames} frames" if args.segment_frames else ""
    title = (f"Peak memory vs. frames: run-video's disk store, random {args.layout} model (VAE /8), dilations "
             f"{'/'.join(map(str, args.dilations))}, n=3, refine {args.refine_step}{segments}; {machine()}")
    write_reports(args.out, "bench_memory", {"title": title, "results": results, "summary": summary},
                  ["size", "frames", "seconds", "RSS before run MB", "peak RSS MB", "peak CUDA MB"], rows)


if __name__ == "__main__":
    main()
