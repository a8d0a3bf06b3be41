"""What num_view (snippet length) costs: time, memory, attention tokens, and optionally accuracy.

For each num_view and each attention path (SDPA, and a plain attention that materialises the
softmax matrix), a fresh process runs the pipeline on the same clip, so that peak memory
(CUDA) or peak RSS (CPU) belongs to that configuration alone. Default model: random weights
with the real UNet/VAE layout, built locally; ``-c`` takes a real checkpoint. With ``--gt``
(exact depth of the clip, e.g. from scripts/make_synthetic_scene.py) it also reports AbsRel,
delta1 and OPW per num_view.

    python benchmarks/compare_num_view.py --res 256 --frames 12
    python benchmarks/compare_num_view.py -c prs-eth/rollingdepth-v1-0 --clip scene.mp4 --gt scene_depth.npy --res 768 --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import load_pipeline, machine, peak_rss_mb, synthetic_clip, write_reports

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def read_clip(args) -> tuple[np.ndarray, np.ndarray | None]:
    if args.clip:
        from rollingdepth.io.video_io import load_source, open_source

        frames = load_source(open_source(args.clip)[0]).read(0, args.frames)
    else:
        frames, depth = synthetic_clip(args.frames, 192, 320)
        return frames, (depth if args.gt is None else np.load(args.gt)[: args.frames])
    gt = np.load(args.gt)[: len(frames)] if args.gt else None
    return frames, gt


def worker(args) -> dict:
    """One configuration, in this process: prints its figures as JSON."""
    from rollingdepth.method.cross_frame_attention import set_cross_frame_attention

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype]
    pipe = load_pipeline(args.checkpoint, "sd2", dtype, device)
    levels = set_cross_frame_attention(pipe.unet, backend=args.backend)
    frames, gt = read_clip(args)

    tokens, heads = {}, {}

    def record(name, level):
        def hook(module, inputs, kwargs):
            hidden = kwargs.get("hidden_states", inputs[0] if inputs else None)
            if hidden is not None and kwargs.get("encoder_hidden_states") is None:
                tokens[level] = max(tokens.get(level, 0), int(hidden.shape[1]))
                heads[level] = module.heads
        return hook

    handles = []
    for name, module in pipe.unet.named_modules():
        if name.endswith("attn1") and f"{name}.processor" in levels:
            handles.append(module.register_forward_pre_hook(record(name, levels[f"{name}.processor"]), with_kwargs=True))

    n = args.num_view
    run = dict(processing_res=args.res, dilations=args.dilations, snippet_lengths=[n],
               unet_batch_size=args.unet_batch_size, coalign="fast")
    if device.startswith("cuda"):  # warm-up (kernels, allocator), then measure from a clean peak
        pipe(frames[: n + 1], generator=torch.Generator(device).manual_seed(0), **run)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = pipe(frames, generator=torch.Generator(device).manual_seed(0), **run)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    for h in handles:
        h.remove()

    snippets = sum(out.settings["snippets_per_dilation"])
    bytes_per = torch.finfo(dtype).bits // 8
    joint = {lvl: n * t for lvl, t in tokens.items()}
    matrix_mb = {lvl: heads[lvl] * joint[lvl] ** 2 * bytes_per / 2**20 for lvl in joint}  # per snippet
    result = {
        "num_view": n,
        "backend": args.backend,
        "frames": int(len(frames)),
        "processing_size": out.settings["processing_size"],
        "seconds_per_frame": seconds / len(frames),
        "unet_seconds_per_snippet": out.timings["snippets"] / max(snippets, 1),
        "snippets": snippets,
        "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else peak_rss_mb(),
        "memory_kind": "CUDA peak allocated" if device.startswith("cuda") else "peak RSS (process)",
        "tokens_per_frame": tokens,
        "tokens_per_level": joint,
        "attention_matrix_mb": matrix_mb,  # what the plain path materialises per snippet; SDPA does not
    }
    if gt is not None:
        from rollingdepth.evaluation.metrics import evaluate_video

        metrics = evaluate_video(out.depth, gt, rgb=frames).metrics
        result["accuracy"] = {k: metrics[k] for k in ("abs_rel", "delta1", "opw")}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--checkpoint", default=None, help="Hub id or folder (default: random weights, real layout)")
    p.add_argument("--clip", default=None, help="video or frame folder (default: the synthetic scene)")
    p.add_argument("--gt", default=None, help="exact depth [N, H, W] .npy for accuracy (the synthetic scene has its own)")
    p.add_argument("--num-views", type=int, nargs="+", default=[2, 3, 4, 5])
    p.add_argument("--backends", nargs="+", default=["sdpa", "math"])
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--dilations", type=int, nargs="+", default=[1])
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", default=None)
    p.add_argument("--unet-batch-size", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--num-view", type=int, help=argparse.SUPPRESS)  # worker mode
    p.add_argument("--backend", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.num_view is not None:
        print(json.dumps(worker(args)))
        return

    results = []
    for n in args.num_views:
        merged = None
        for backend in args.backends:
            proc = subprocess.run(worker_command(args, n, backend), capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"num_view {n}, {backend}: failed\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if merged is None:
                merged = {**r, "by_backend": {}}
            merged["by_backend"][backend] = {k: r[k] for k in ("seconds_per_frame", "unet_seconds_per_snippet", "peak_memory_mb")}
        results.append(merged)

    levels = list(results[0]["tokens_per_level"])
    header = ["num_view"] + [f"{b} s/frame" for b in args.backends] + [f"{b} UNet s/snippet" for b in args.backends] \
        + [f"{b} peak MB" for b in args.backends] + [f"tokens {lvl}" for lvl in levels] \
        + [f"attn matrix MB {lvl}" for lvl in levels]
    if "accuracy" in results[0]:
        header += ["AbsRel", "delta1", "OPW"]
    rows = []
    for r in results:
        row = [r["num_view"]]
        row += [f"{r['by_backend'][b]['seconds_per_frame']:.3f}" for b in args.backends]
        row += [f"{r['by_backend'][b]['unet_seconds_per_snippet']:.3f}" for b in args.backends]
        row += [f"{r['by_backend'][b]['peak_memory_mb']:.0f}" for b in args.backends]
        row += [r["tokens_per_level"][lvl] for lvl in levels]
        row += [f"{r['attention_matrix_mb'][lvl]:.1f}" for lvl in levels]
        if "accuracy" in r:
            row += [f"{r['accuracy']['abs_rel']:.4f}", f"{r['accuracy']['delta1']:.4f}", f"{r['accuracy']['opw']:.4f}"]
        rows.append(row)
    title = (f"num_view comparison: {args.checkpoint or 'random weights, real UNet/VAE layout'}, {args.dtype}, "
             f"processing size {results[0]['processing_size']}, {results[0]['frames']} frames, dilations {args.dilations}, "
             f"{machine()}; peak memory: {results[0]['memory_kind']}; attention matrix: per snippet, all heads, "
             f"as the plain path materialises it (SDPA does not)")
    print(title)
    write_reports(args.out, "compare_num_view", {"title": title, "args": {k: str(v) for k, v in vars(args).items()},
                                                 "results": results}, header, rows)


def worker_command(args, n: int, backend: str) -> list[str]:
    """This script in worker mode for one num_view and attention path."""
    cmd = [sys.executable, __file__, "--num-view", str(n), "--backend", backend, "--frames", str(args.frames),
           "--res", str(args.res), "--dtype", args.dtype, "--unet-batch-size", str(args.unet_batch_size),
           "--dilations", *map(str, args.dilations)]
    for flag, value in (("-c", args.checkpoint), ("--clip", args.clip), ("--gt", args.gt), ("--device", args.device)):
        if value:
            cmd += [flag, str(value)]
    return cmd


if __name__ == "__main__":
    main()
