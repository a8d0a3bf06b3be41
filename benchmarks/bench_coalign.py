"""Co-alignment speed and loss: the reference optimiser against our fast solver.

Synthetic but realistic snippets: one smooth depth video (moving blobs over a slanted
plane, in [-1, 1] like the decoder's output), cut into snippets for each dilation, each
snippet with its own random scale and shift plus noise. Prints seconds and final loss for
both modes and their ratio. The reference may run fewer than its 2000 iterations
(``--ref-iterations``): its time is then extrapolated linearly and marked as such.

    python benchmarks/bench_coalign.py                      # 250 frames, 432 x 768
    python benchmarks/bench_coalign.py --ref-iterations 2000

``--static``: a static scene (every snippet the same map plus tiny noise, 30 frames at
432 x 768 unless told, the fast preset's dilations capped to the clip): the fast mode as
before, with subnormals flushed, and as the library runs it now (flushed, heap reused);
CPU and wall seconds, page faults. ``--run-video-heap``: under run-video's heap setting.

    python benchmarks/bench_coalign.py --static --frames 30
    python benchmarks/bench_coalign.py --static --frames 30 --run-video-heap
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import rollingdepth.method.coalign as coalign_module
from rollingdepth.method.coalign import REF_ITERATIONS, build_problem, coalign, coalign_loss, merge_snippets, solve
from rollingdepth.method.snippets import plan_snippets, snippet_indices


def depth_video(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= height
    xx /= width
    video = np.empty((num_frames, height, width), np.float32)
    centres = rng.uniform(0.2, 0.8, size=(4, 2))
    speeds = rng.uniform(-0.002, 0.002, size=(4, 2))
    for i in range(num_frames):
        v = 0.6 * yy + 0.1 * np.sin(6 * xx + 0.02 * i)
        for (cy, cx), (vy, vx) in zip(centres, speeds):
            v += 0.5 * np.exp(-(((yy - cy - vy * i) ** 2) + ((xx - cx - vx * i) ** 2)) / 0.01)
        video[i] = v
    return (video - video.min()) / (video.max() - video.min()) * 2 - 1


def make_snippets(video: np.ndarray, dilations, length: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    groups = []
    for d in dilations:
        idx = snippet_indices(video.shape[0], length, d)  # [S, n]
        s = rng.uniform(0.7, 1.3, size=(len(idx), 1, 1, 1)).astype(np.float32)
        t = rng.normal(0, 0.1, size=(len(idx), 1, 1, 1)).astype(np.float32)
        snip = video[idx] * s + t
        snip += rng.normal(0, 0.01, size=snip.shape).astype(np.float32)
        groups.append(snip)
    return groups


def static_snippets(num_frames: int, height: int, width: int, dilations, length: int, noise: float, seed: int = 2):
    """Every snippet frame one smooth map plus Gaussian noise of ``noise``: snippets that nearly agree."""
    base = depth_video(1, height, width)[0]
    rng = np.random.default_rng(seed)
    groups = []
    for d in dilations:
        snip = np.broadcast_to(base, (len(snippet_indices(num_frames, length, d)), length, height, width)).copy()
        snip += rng.normal(0, noise, size=snip.shape).astype(np.float32)
        groups.append(snip)
    return groups


STATIC_VARIANTS = {  # name: (flush subnormals, reuse the heap)
    "before": (False, False),
    "flush only": (True, False),
    "now": (True, True),
}


def _coalign_static(snippets, dilations, device, heap: bool):
    """``coalign(mode="fast")``, with the solve inside run-video's ``heap_reuse`` (as
    ``VideoRun.coalign`` runs it) when ``heap``."""
    import contextlib

    from rollingdepth.runtime.heap import heap_reuse

    problem = build_problem(snippets, dilations, device=device)
    with heap_reuse() if heap else contextlib.nullcontext():
        scales, shifts, loss, iterations = solve(problem, "fast")
    depth = merge_snippets(snippets, dilations, scales, shifts, problem.min_value, problem.num_frames)
    return depth, {"loss": loss, "iterations": iterations}


def run_static(args) -> dict:
    """Fast co-alignment of a static clip as before (plain), with subnormals flushed, and as
    now (flushed, heap reused: matters under run-video's heap setting). One warm-up run
    (it touches the memory), then the variants in turn, ``--repeat`` times, best kept."""
    import resource

    plan = plan_snippets(args.frames, args.dilations, [args.snippet_len] * len(args.dilations), cap=True)
    dilations = [d for d, _ in plan]
    snippets = static_snippets(args.frames, args.height, args.width, dilations, args.snippet_len, args.noise)
    print(f"static clip: {args.frames} frames, {args.height}x{args.width}, dilations {dilations}, noise {args.noise}: "
          f"{sum(len(s) for s in snippets)} snippets; torch threads {torch.get_num_threads()}; "
          f"heap: {'run-video (limit_heap_growth)' if args.run_video_heap else 'glibc default'}")
    results, depths = {}, {}
    for run, name in enumerate(["now"] + list(STATIC_VARIANTS) * args.repeat):
        flush, heap = STATIC_VARIANTS[name]
        coalign_module.FLUSH_DENORMALS = flush
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        depths[name], info = _coalign_static(snippets, dilations, args.device, heap)
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - w0
        cpu, faults = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt
        print(f"{'warm-up' if run == 0 else name:10s}: {cpu:6.1f} s CPU, {wall:6.1f} s wall, {faults:8d} page faults, "
              f"loss {info['loss']:.6g}")
        if run and (name not in results or cpu < results[name]["cpu_seconds"]):
            results[name] = {"cpu_seconds": cpu, "wall_seconds": wall, "loss": info["loss"], "page_faults": faults}
    coalign_module.FLUSH_DENORMALS = True
    print("best CPU time: " + ", ".join(f"{k} {v['cpu_seconds']:.1f} s" for k, v in results.items())
          + f"; largest difference of the merged depth from before's "
          f"{max(np.abs(d - depths['before']).max() for d in depths.values()):.2g}")
    return {"variants": results, "dilations": dilations}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--height", type=int, default=432)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 10, 25])
    p.add_argument("--snippet-len", type=int, default=3)
    p.add_argument("--ref-iterations", type=int, default=100, help="reference iterations actually run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--snippets-npz", default=None,
                   help="use snippets_0, snippets_1, ... of this .npz (e.g. tests/fixtures/golden/case_a/reference.npz) "
                        "with --dilations instead of synthetic ones")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--static", action="store_true", help="the static-clip case: flushing subnormals or not")
    p.add_argument("--noise", type=float, default=1e-3, help="--static: noise on the common map")
    p.add_argument("--repeat", type=int, default=2, help="--static: runs of each variant (best CPU time kept)")
    p.add_argument("--run-video-heap", action="store_true",
                   help="the heap setting run-video makes (rollingdepth.runtime.heap.limit_heap_growth) first")
    args = p.parse_args()
    if args.run_video_heap:
        from rollingdepth.runtime.heap import limit_heap_growth

        limit_heap_growth()
    if args.static:
        if args.dilations == [1, 10, 25]:
            args.dilations = [1, 25]  # the fast preset's
        results = run_static(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=2)
        return

    if args.snippets_npz:
        data = np.load(args.snippets_npz)
        snippets = [data[f"snippets_{i}"].reshape(data[f"snippets_{i}"].shape[:2] + data[f"snippets_{i}"].shape[-2:])
                    for i in range(len(args.dilations))]
        args.frames = snippets[0].shape[0] + (snippets[0].shape[1] - 1) * args.dilations[0]
        args.height, args.width = snippets[0].shape[-2:]
        args.snippet_len = snippets[0].shape[1]
    else:
        video = depth_video(args.frames, args.height, args.width)
        snippets = make_snippets(video, args.dilations, args.snippet_len)
    mb = sum(s.nbytes for s in snippets) / 2**20
    print(f"{args.frames} frames, {args.height}x{args.width}, dilations {args.dilations}, "
          f"snippet length {args.snippet_len}: {sum(len(s) for s in snippets)} snippets ({mb:.0f} MB)")
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {args.device}")

    coalign(snippets, args.dilations, mode="fast", device=args.device, iterations=2)  # warm-up
    results = {}
    for mode, iters in (("fast", None), ("reference", args.ref_iterations)):
        t0 = time.perf_counter()
        _, info = coalign(snippets, args.dilations, mode=mode, device=args.device, iterations=iters)
        seconds = time.perf_counter() - t0
        results[mode] = {"seconds": seconds, "loss": info["loss"], "iterations": info["iterations"]}

    # Extrapolate the reference's time to its 2000 iterations: fixed cost (problem build,
    # merge) plus per-iteration cost measured from the iterations run.
    ref = results["reference"]
    t0 = time.perf_counter()
    problem = build_problem(snippets, args.dilations, device=args.device)
    fixed = time.perf_counter() - t0
    ones = [np.ones(len(s)) for s in snippets]
    zeros = [np.zeros(len(s)) for s in snippets]
    t0 = time.perf_counter()
    coalign_loss(problem, ones, zeros)
    fixed += time.perf_counter() - t0  # the final loss evaluation
    extrapolated = ref["iterations"] < REF_ITERATIONS
    per_iter = max(ref["seconds"] - fixed, 0.0) / max(ref["iterations"], 1)
    ref_full = fixed + per_iter * REF_ITERATIONS if extrapolated else ref["seconds"]
    ref["seconds_2000"] = ref_full
    ref["extrapolated"] = extrapolated

    fast = results["fast"]
    mark = f" (extrapolated from {ref['iterations']} iterations)" if extrapolated else ""
    loss_mark = f" (after {ref['iterations']} of 2000 iterations)" if extrapolated else ""
    print(f"reference: {ref_full:8.1f} s{mark}, loss {ref['loss']:.6f}{loss_mark}")
    print(f"fast     : {fast['seconds']:8.1f} s ({fast['iterations']} iterations), loss {fast['loss']:.6f}")
    print(f"speed-up : {ref_full / fast['seconds']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
