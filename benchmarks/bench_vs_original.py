"""CPU time of the two cases the original implementation was timed on, through both front ends.

Case ``golden``: the golden case_a frames (40 frames, 64 x 96) with the tiny test checkpoint,
dilations 1 and 10, snippet length 3, the reference co-alignment, fp32 (the original: 38.5 s
end to end on a 2-core machine of this kind). Case ``sd2``: random weights with the real
UNet/VAE layout, the first 16 golden frames, dilations 1 and 4, snippet length 3, fp32, fast
co-alignment (the original: 69.6 s).

Each case runs ``RollingDepthPipeline.__call__`` on the frames in memory and run-video's
``process_video`` on the same frames as a PNG folder (``-p none --res 0``, no videos written:
only ``_pred.npy``), and prints the seconds of each, the stages, and the work counted.
Run it with nothing else on the machine.

``--processes``: whole processes instead, as a user runs them, from start to exit: a Python
process that loads the pipeline, calls ``__call__`` on the frames (read from the golden
``.npy``) and saves the depth with ``np.save``, against the ``run-video`` command on the PNG
folder (``--shots none``, the same method settings, ``_pred.npy`` and one colour video
``Greys_r``, no side-by-side: the command writes at least one video). Both are run
``--repeat`` times, alternating; the ratio of the fastest of each and of the medians is printed.

    python benchmarks/bench_vs_original.py
    python benchmarks/bench_vs_original.py --cases golden --repeat 2
    python benchmarks/bench_vs_original.py --cases golden --processes --repeat 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO, TINY, load_pipeline, machine, write_reports

GOLDEN = REPO / "tests" / "fixtures" / "golden" / "case_a" / "frames_uint8.npy"
ORIGINAL_SECONDS = {"golden": 38.5, "sd2": 69.6}
CASES = {
    "golden": dict(frames=40, checkpoint=str(TINY), dilations=[1, 10], coalign="reference"),
    "sd2": dict(frames=16, checkpoint=None, dilations=[1, 4], coalign="fast"),
}


def write_pngs(frames: np.ndarray, folder: Path) -> None:
    import cv2

    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), f[..., ::-1])


def time_call(pipe, frames, case) -> dict:
    t0 = time.perf_counter()
    out = pipe(frames, processing_res=0, dilations=case["dilations"], snippet_lengths=[3], coalign=case["coalign"],
               generator=torch.Generator().manual_seed(0))
    return {"seconds": time.perf_counter() - t0, "timings": out.timings, "counts": out.counts, "depth": out.depth}


def time_run_video(pipe, folder: Path, case) -> dict:
    from rollingdepth.runtime.run_config import RunConfig
    from rollingdepth.runtime.video_job import process_video
    from rollingdepth.io.video_io import load_source, open_source

    cfg = RunConfig.build("none", dict(processing_res=0, dilations=case["dilations"], snippet_lengths=[3],
                                       coalign=case["coalign"], dtype="fp32", cmaps=["Greys_r"], save_sbs=False))
    cfg.cmaps = []  # only the .npy: the comparison is the method, not the video encoders
    source = load_source(open_source(str(folder))[0])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        process_video(pipe, source, Path(out), cfg, lambda *a: None)
        seconds = time.perf_counter() - t0
        report = json.loads((Path(out) / f"{source.stem}_run.json").read_text())
        depth = np.load(Path(out) / f"{source.stem}_pred.npy")
    return {"seconds": seconds, "timings": report["timings"], "counts": report["counts"], "depth": depth}


_CALL_PROCESS = """
import sys, numpy as np, torch
from rollingdepth import RollingDepthPipeline
checkpoint, frames, out, count, dilations, coalign = sys.argv[1:7]
pipe = RollingDepthPipeline.from_pretrained(checkpoint, torch_dtype=torch.float32)
frames = np.load(frames)[: int(count)]
result = pipe(frames, processing_res=0, dilations=[int(d) for d in dilations.split(",")], snippet_lengths=[3],
              coalign=coalign, generator=torch.Generator().manual_seed(0))
np.save(out, result.depth)
"""


def time_process(cmd: list[str]) -> dict:
    """Wall and CPU seconds (user + system, all threads and children) and minor page faults of one whole process."""
    import resource
    import subprocess
    import sys

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench_vs_original: {' '.join(cmd[:3])} failed:\n{done.stderr[-3000:]}")
    return {"seconds": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt}


def compare_processes(name: str, case: dict, frames: np.ndarray, repeat: int) -> dict:
    """``__call__`` in a process of its own against the ``run-video`` command, whole processes."""
    checkpoint = case["checkpoint"]
    if checkpoint is None:
        raise SystemExit("bench_vs_original: --processes needs a checkpoint on disk (the golden case)")
    dilations = ",".join(map(str, case["dilations"]))
    runs = {"__call__": [], "run-video": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, npy = tmp / f"{name}_frames", tmp / "frames.npy"
        write_pngs(frames, folder)
        np.save(npy, frames)
        commands = {
            "__call__": ["-c", _CALL_PROCESS, checkpoint, str(npy), str(tmp / "call_depth.npy"), str(case["frames"]),
                         dilations, case["coalign"]],
            "run-video": ["-m", "rollingdepth", str(folder), "-c", checkpoint, "-p", "none", "--res", "0", "-d", dilations,
                          "--snippet-lengths", "3", "--coalign", case["coalign"], "--dtype", "fp32", "--shots", "none",
                          "--cmap", "Greys_r", "--no-save-sbs", "-q", "-o", str(tmp / "out")],
        }
        for i in range(repeat):
            for front, cmd in commands.items():
                r = time_process(cmd)
                runs[front].append(r)
                print(f"{name} {front} process {i + 1}: {r['seconds']:.1f} s wall, {r['cpu']:.1f} s CPU, "
                      f"{r['faults']:,} page faults", flush=True)
        diff = float(np.abs(np.load(tmp / "call_depth.npy") - np.load(tmp / "out" / f"{folder.name}_pred.npy")).max())
    best = {front: min(r, key=lambda x: x["seconds"]) for front, r in runs.items()}
    ratio = best["run-video"]["seconds"] / best["__call__"]["seconds"]
    median = {front: float(np.median([x["seconds"] for x in r])) for front, r in runs.items()}
    median_ratio = median["run-video"] / median["__call__"]
    print(f"{name}: whole processes, fastest of {repeat}: __call__ {best['__call__']['seconds']:.1f} s, run-video "
          f"{best['run-video']['seconds']:.1f} s ({ratio:.3f}x); median: {median['__call__']:.1f} s, "
          f"{median['run-video']:.1f} s ({median_ratio:.3f}x); predictions differ by at most {diff:.2e}")
    return {"case": name, "runs": runs, "ratio": ratio, "median_ratio": median_ratio, "max_abs_difference": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--repeat", type=int, default=1, help="runs of each front end (the fastest counts)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--processes", action="store_true", help="time whole processes (see above)")
    args = p.parse_args()

    rows, results = [], []
    all_frames = np.load(GOLDEN)
    if args.processes:
        for name in args.cases:
            results.append(compare_processes(name, CASES[name], all_frames[: CASES[name]["frames"]], args.repeat))
        write_reports(args.out, "bench_vs_original_processes", {"title": f"whole processes; {machine()}",
                                                                 "results": results},
                      ["case", "ratio (fastest)", "ratio (median)"],
                      [[r["case"], f"{r['ratio']:.3f}", f"{r['median_ratio']:.3f}"] for r in results])
        return
    for name in args.cases:
        case = CASES[name]
        frames = all_frames[: case["frames"]]
        pipe = load_pipeline(case["checkpoint"], "sd2", torch.float32, "cpu")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"{name}_frames"
            write_pngs(frames, folder)
            runs = {}
            for front, fn in (("__call__", lambda: time_call(pipe, frames, case)),
                              ("run-video", lambda: time_run_video(pipe, folder, case))):
                best = min((fn() for _ in range(args.repeat)), key=lambda r: r["seconds"])
                runs[front] = best
                t = best["timings"]
                rows.append([name, front, f"{best['seconds']:.1f}", f"{ORIGINAL_SECONDS[name]:.1f}",
                             *(f"{t.get(k, 0):.1f}" for k in ("encode", "snippets", "decode", "coalign", "merge")),
                             best["counts"]["vae_decodes"]])
                print(f"{name} {front}: {best['seconds']:.1f} s (original {ORIGINAL_SECONDS[name]} s), "
                      f"counts {best['counts']}", flush=True)
            diff = float(np.abs(runs["__call__"]["depth"] - runs["run-video"]["depth"]).max())
            results.append({"case": name, "original_seconds": ORIGINAL_SECONDS[name], "max_abs_difference": diff,
                            **{front: {k: v for k, v in r.items() if k != "depth"} for front, r in runs.items()}})
            print(f"{name}: __call__ and run-video differ by at most {diff:.2e}")
        del pipe
    title = f"CPU, fp32: our two front ends against the original implementation's time; {machine()}"
    write_reports(args.out, "bench_vs_original", {"title": title, "results": results},
                  ["case", "front end", "s", "original s", "encode", "snippets", "decode", "coalign", "merge",
                   "VAE decodes"], rows)


if __name__ == "__main__":
    main()
