"""Seconds per frame and the share of each stage, for run-video's streaming path.

Runs ``process_video`` (what ``run-video`` runs per video) on the synthetic clip for:
(a) the tiny test checkpoint, (b) random weights with the real UNet/VAE layout at a small
processing size on CPU, (c) the same at 768 x 432 with the fast preset on CUDA when there is
a GPU. Each case runs with one snippet per UNet call and with the automatic batch, side by
side. Frame decoding overlaps encoding (a prefetch thread); its cost alone is measured by a
separate read of the clip.

    python benchmarks/bench_pipeline.py
    python benchmarks/bench_pipeline.py --cases tiny --frames 48
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import TINY, load_pipeline, machine, synthetic_clip, write_reports

STAGES = ("encode", "snippets", "decode", "coalign", "merge", "refine", "write")


def make_clip(path: Path, frames: int, height: int, width: int) -> None:
    from rollingdepth.video_io import VideoWriter

    rgb, _ = synthetic_clip(frames, height, width)
    with VideoWriter(path, 24, (height, width)) as writer:
        for f in rgb:
            writer.write(f)


def run_case(name, pipe, clip: Path, res: int, unet_bs, preset: str, refine: int):
    from rollingdepth.config import RunConfig
    from rollingdepth.runner import process_video
    from rollingdepth.video_io import load_source

    source = load_source(clip)
    t0 = time.perf_counter()
    for _ in source.frames():
        pass
    read_s = time.perf_counter() - t0
    cfg = RunConfig.build(preset, dict(processing_res=res, unet_batch_size=unet_bs, dtype="fp32",
                                       refine_step=refine, cmaps=["Spectral_r"], save_sbs=True))
    with tempfile.TemporaryDirectory() as out:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = process_video(pipe, source, Path(out), cfg, lambda *a: None)
        total = time.perf_counter() - t0
        import json

        report = json.loads((Path(out) / f"{source.stem}_run.json").read_text())
    timings = report["timings"]
    shares = {k: timings.get(k, 0.0) / total for k in STAGES}
    return {
        "case": name, "unet_batch": unet_bs or "auto", "used_batch": report["settings"]["unet_batch_size"],
        "frames": result.frames, "seconds_per_frame": total / result.frames, "read_seconds_per_frame": read_s / result.frames,
        "shares": shares, "processing_size": report["output_size"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["tiny", "sd2-cpu", "sd2-cuda"])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--refine-step", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        clip_small, clip_big = Path(tmp) / "small.mp4", Path(tmp) / "big.mp4"
        make_clip(clip_small, args.frames, 96, 160)
        for case in args.cases:
            if case == "tiny":
                pipe, clip, res = load_pipeline(str(TINY), "sd2", torch.float32, "cpu"), clip_small, 96
            elif case == "sd2-cpu":
                pipe, clip, res = load_pipeline(None, "sd2", torch.float32, "cpu"), clip_small, 128
            elif case == "sd2-cuda":
                if not torch.cuda.is_available():
                    print("sd2-cuda: no GPU here, skipped")
                    continue
                make_clip(clip_big, args.frames, 432, 768)
                pipe, clip, res = load_pipeline(None, "sd2", torch.float16, "cuda"), clip_big, 768
            else:
                raise SystemExit(f"unknown case {case}")
            for bs in (1, None):
                r = run_case(case, pipe, clip, res, bs, "fast", args.refine_step)
                results.append(r)
                rows.append([case, r["unet_batch"], str(r["used_batch"]), f"{r['processing_size'][1]}x{r['processing_size'][0]}",
                             r["frames"], f"{r['seconds_per_frame']:.3f}", f"{r['read_seconds_per_frame']:.4f}",
                             *(f"{100 * r['shares'][k]:.0f}%" for k in STAGES)])
                print(f"{case}, snippets per call {r['unet_batch']}: {r['seconds_per_frame']:.3f} s/frame", flush=True)
            del pipe
    title = f"run-video per-frame time and stage shares (fast preset, dilations 1/25, n=3); {machine()}"
    write_reports(args.out, "bench_pipeline", {"title": title, "results": results},
                  ["case", "snippets/call", "used", "size", "frames", "s/frame", "read s/frame", *STAGES], rows)


if __name__ == "__main__":
    main()
