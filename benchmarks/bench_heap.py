"""What the process's malloc settings cost the method on a CPU.

run-video fixes glibc's mmap threshold (``rollingdepth.runtime.heap.limit_heap_growth``) so
that freed batch buffers go back to the system and memory stays flat on long videos. Fixing it
also stops glibc from adapting its trim threshold, so the settings change how often the
process faults in fresh pages. This script runs the golden case (tiny checkpoint, 40 frames
64 x 96, dilations 1 and 10, snippet length 3, reference co-alignment, fp32) through
``RollingDepthPipeline.__call__`` once per variant, each in a fresh process, after one warm-up
call in that process, and prints the call's wall and CPU seconds and its minor page faults.

Variants: ``default`` (glibc's own adaptive settings), ``run-video`` (what run-video applies
now), or ``mmap=SIZE[,trim=SIZE][,arenas=N]`` for settings to try (sizes like 4M, 64M).

    python benchmarks/bench_heap.py
    python benchmarks/bench_heap.py --variants default run-video mmap=4M,trim=64M,arenas=2 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import REPO, TINY, machine, write_reports

GOLDEN = REPO / "tests" / "fixtures" / "golden" / "case_a" / "frames_uint8.npy"

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[3])
variant, checkpoint, frames_path = sys.argv[1], sys.argv[2], sys.argv[4]
from rollingdepth.runtime import heap as dev
if variant == "run-video":
    dev.limit_heap_growth()
elif variant != "default":
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    codes = {"mmap": dev._M_MMAP_THRESHOLD, "trim": dev._M_TRIM_THRESHOLD, "arenas": dev._M_ARENA_MAX}
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    for part in variant.split(","):
        key, value = part.split("=")
        number = int(value[:-1]) * units[value[-1].upper()] if value[-1].upper() in units else int(value)
        if not libc.mallopt(codes[key], number):
            raise SystemExit(f"mallopt {key}={value} refused")
from rollingdepth import RollingDepthPipeline
pipe = RollingDepthPipeline.from_pretrained(checkpoint, torch_dtype=torch.float32)
frames = np.load(frames_path)[:40]
def call():
    return pipe(frames, processing_res=0, dilations=[1, 10], snippet_lengths=[3], coalign="reference",
                generator=torch.Generator().manual_seed(0))
call()  # warm-up
before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
call()
wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                  "system": after.ru_stime - before.ru_stime, "faults": after.ru_minflt - before.ru_minflt,
                  "peak_rss_mb": after.ru_maxrss / 1024}))
"""


def run_variant(variant: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, variant, str(TINY), str(REPO), str(GOLDEN)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_heap: variant {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["default", "run-video"])
    p.add_argument("--repeat", type=int, default=1, help="rounds over the variants, alternating")
    p.add_argument("--out", type=__import__("pathlib").Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for i in range(args.repeat):
        for v in args.variants:
            r = run_variant(v)
            runs[v].append(r)
            print(f"{v} run {i + 1}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU ({r['system']:.1f} system), "
                  f"{r['faults']:,} page faults, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    rows = []
    for v, rs in runs.items():
        best = min(rs, key=lambda r: r["wall"])
        rows.append([v, f"{best['wall']:.1f}", f"{best['cpu']:.1f}", f"{best['system']:.1f}", f"{best['faults']:,}",
                     f"{best['peak_rss_mb']:.0f}"])
    write_reports(args.out, "bench_heap", {"title": f"golden __call__ per heap setting; {machine()}", "runs": runs},
                  ["heap", "wall s", "CPU s", "system s", "page faults", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
