"""Per stage: FLOPs, seconds, achieved TFLOP/s (and on CUDA the share of the device's peak).

Runs ``process_video`` (what ``run-video`` runs per video) on the synthetic clip. The FLOPs
of one VAE encode, one VAE decode (per frame) and one UNet call (per snippet of n frames) are
counted once with ``torch.utils.flop_counter.FlopCounterMode`` on the model at the run's
size; a stage's FLOPs are those units times the work the run report counts (``counts``,
``settings``), so a second decode of a snippet frame would show here as FLOPs.

Cases: ``tiny`` (the test checkpoint, CPU), ``sd2-cpu`` (random weights with the real
UNet/VAE layout, small size, CPU), ``sd2-cuda`` (the same at 768 x 432 on CUDA).

    python benchmarks/bench_pipeline.py
    python benchmarks/bench_pipeline.py --cases sd2-cuda --frames 250 --dtype fp16 bf16 --compile off on
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common import TINY, load_pipeline, machine, synthetic_clip, write_reports

STAGES = ("encode", "snippets", "decode", "coalign", "merge", "refine", "write")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Dense tensor-core peaks in TFLOP/s (fp16/bf16 with fp32 accumulation; tf32 for fp32), from
# the vendors' data sheets; a GPU not listed gets no share.
PEAK_TFLOPS = {
    "H200": {"fp16": 989, "bf16": 989, "fp32": 494},
    "H100": {"fp16": 989, "bf16": 989, "fp32": 494},
    "A100": {"fp16": 312, "bf16": 312, "fp32": 156},
    "L40S": {"fp16": 362, "bf16": 362, "fp32": 183},
    "RTX 4090": {"fp16": 165, "bf16": 165, "fp32": 83},
    "RTX 3090": {"fp16": 71, "bf16": 71, "fp32": 36},
}


def make_clip(path: Path, frames: int, height: int, width: int) -> None:
    from rollingdepth.io.video_io import VideoWriter

    rgb, _ = synthetic_clip(frames, height, width)
    with VideoWriter(path, 24, (height, width)) as writer:
        for f in rgb:
            writer.write(f)


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def unit_flops(pipe, size: tuple[int, int], snippet_lengths: set[int]) -> dict:
    """FLOPs of one frame through the VAE encoder and decoder, and of one snippet of each n
    through the UNet (with the scheduler step), at processing size ``size``."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    frame = torch.zeros((1, *size, 3), dtype=torch.uint8)
    latent = pipe.encode_frames(frame, size)  # [1, 4, h, w]
    units = {"encode": count_flops(lambda: pipe.encode_frames(frame, size)),
             "decode": count_flops(lambda: pipe.decode_depth(latent, size))}
    pipe.scheduler.set_timesteps(1)
    t = pipe.scheduler.timesteps[0]
    pipe.empty_text_embedding()
    for n in sorted(snippet_lengths):
        z = latent.expand(n, -1, -1, -1).to(device, dtype)
        units[f"unet{n}"] = count_flops(lambda: pipe.denoise_snippets(z, z, t, n))
    return units


def stage_flops(report: dict, units: dict) -> dict:
    """FLOPs per stage from the run report's settings and counts."""
    from rollingdepth.method.snippets import snippet_indices

    s, counts, n_frames = report["settings"], report["counts"], report["frames"]
    snippet_frames = sum(snippet_indices(n_frames, n, d).size for d, n in zip(s["dilations"], s["snippet_lengths"]))
    flops = {
        "encode": n_frames * units["encode"],
        "snippets": sum(k * units[f"unet{n}"] for k, n in zip(s["snippets_per_dilation"], s["snippet_lengths"])),
        "decode": snippet_frames * units["decode"],
        "merge": (counts["vae_decodes"] - snippet_frames - (n_frames if s["refine_step"] else 0)) * units["decode"],
    }
    if s["refine_step"]:
        n = s["refine_snippet_len"]
        steps = sum(len(snippet_indices(n_frames, n, d)) for d in s["refine_dilations"])
        flops["refine"] = n_frames * (units["encode"] + units["decode"]) + steps * units[f"unet{n}"]
    return flops


def device_peak(dtype: str) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[dtype]
    return None


def run_case(name, pipe, clip: Path, res: int, dtype: str, compile: bool, preset: str, refine: int,
             unet_bs: int | None) -> dict:
    from rollingdepth.runtime.run_config import RunConfig
    from rollingdepth.runtime.loading import accelerate_pipeline
    from rollingdepth.runtime.video_job import process_video
    from rollingdepth.io.video_io import load_source

    source = load_source(clip)
    cfg = RunConfig.build(preset, dict(processing_res=res, unet_batch_size=unet_bs, dtype=dtype, refine_step=refine,
                                       cmaps=["Spectral_r"], save_sbs=False))
    if compile:
        accelerate_pipeline(pipe, compile=True)
    size = pipe.processing_size(*source.size, res)
    units = unit_flops(pipe, size, set(cfg.method_settings().snippet_lengths) | {cfg.refine_snippet_len})
    with tempfile.TemporaryDirectory() as out:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = process_video(pipe, source, Path(out), cfg, lambda *a: None)
        total = time.perf_counter() - t0
        report = json.loads((Path(out) / f"{source.stem}_run.json").read_text())
    flops = stage_flops(report, units)
    peak = device_peak(dtype)
    stages = {}
    for k in STAGES:
        seconds = report["timings"].get(k)
        if seconds is None:
            continue
        tflops = flops.get(k, 0) / 1e12
        rate = tflops / seconds if seconds > 0 and tflops else None
        stages[k] = {"seconds": seconds, "tflop": tflops, "tflop_per_s": rate,
                     "share_of_peak": rate / peak if rate and peak else None}
    total_tflop = sum(flops.values()) / 1e12
    return {
        "case": name, "dtype": dtype, "compile": compile, "frames": result.frames, "size": list(size),
        "seconds": total, "seconds_per_frame": total / result.frames, "tflop": total_tflop,
        "tflop_per_s": total_tflop / total, "stages": stages, "units_gflop": {k: v / 1e9 for k, v in units.items()},
        "counts": report["counts"], "unet_batch": report["settings"]["unet_batch_size"],
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["tiny", "sd2-cpu", "sd2-cuda"])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--dtype", nargs="+", default=None, help="default: fp32 on CPU, fp16 on CUDA")
    p.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--refine-step", type=int, default=0)
    p.add_argument("--unet-batch-size", type=int, default=None)
    p.add_argument("-c", "--checkpoint", default=None,
                   help="real checkpoint (folder or Hub id) for the sd2 cases; default: random weights, same layout")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            cuda = case == "sd2-cuda"
            if cuda and not torch.cuda.is_available():
                print("sd2-cuda: no GPU here, skipped")
                continue
            h, w, res = (432, 768, 768) if cuda else (96, 160, 96 if case == "tiny" else 128)
            clip = Path(tmp) / f"clip_{h}x{w}.mp4"
            if not clip.exists():
                make_clip(clip, args.frames, h, w)
            for dtype in args.dtype or (["fp16"] if cuda else ["fp32"]):
                for compile in args.compile:
                    pipe = load_pipeline(str(TINY) if case == "tiny" else args.checkpoint, "sd2", DTYPES[dtype],
                                         "cuda" if cuda else "cpu")
                    r = run_case(case, pipe, clip, res, dtype, compile == "on", "fast", args.refine_step,
                                 args.unet_batch_size)
                    del pipe
                    results.append(r)
                    for stage, v in r["stages"].items():
                        rows.append([case, dtype, compile, f"{r['size'][1]}x{r['size'][0]}", r["frames"], stage,
                                     f"{v['tflop']:.3f}", f"{v['seconds']:.2f}",
                                     f"{v['tflop_per_s']:.3f}" if v["tflop_per_s"] else "-",
                                     f"{100 * v['share_of_peak']:.0f}%" if v["share_of_peak"] else "-"])
                    rows.append([case, dtype, compile, f"{r['size'][1]}x{r['size'][0]}", r["frames"], "**total**",
                                 f"{r['tflop']:.3f}", f"{r['seconds']:.2f}", f"{r['tflop_per_s']:.3f}",
                                 f"peak GPU {r['peak_cuda_mb']:.0f} MB" if r["peak_cuda_mb"] else "-"])
                    print(f"{case} {dtype} compile {compile}: {r['seconds']:.1f} s, {r['seconds_per_frame']:.3f} s/frame, "
                          f"{r['tflop']:.2f} TFLOP, {r['tflop_per_s']:.3f} TFLOP/s; counts {r['counts']}", flush=True)
    title = f"run-video per stage: FLOPs, seconds, TFLOP/s (fast preset, dilations 1/25, n=3); {machine()}"
    write_reports(args.out, "bench_pipeline", {"title": title, "results": results},
                  ["case", "dtype", "compile", "size", "frames", "stage", "TFLOP", "s", "TFLOP/s", "of peak"], rows)


if __name__ == "__main__":
    main()
