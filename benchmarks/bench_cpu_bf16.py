"""bf16 against fp32 on a CPU: what it costs in accuracy, what it saves in time.

On a CPU with native bf16 (AVX512-BF16, AMX), ``fp16`` runs in bf16 (``rollingdepth.method.device``).
This script measures, fp32 against bf16 (and bf16 with the VAE decoder kept in fp32):

* accuracy: largest and mean absolute difference of the co-aligned prediction (``[-1, 1]``),
  ``sd2``: random SD2-sized weights on a small synthetic clip (fast co-alignment);
  ``golden``: the tiny checkpoint on tests/fixtures/golden/case_a (40 frames 64x96, d 1,10),
  fast co-alignment, and the reference optimiser on the same snippets;
* speed (``speed``): one UNet call (a snippet of 3 frames) and one VAE decode of 3 frames at
  latents 27 x 48 (768 x 432), SD2-sized, best of ``--repeat``, wall and process CPU seconds.

    python benchmarks/bench_cpu_bf16.py                        # everything, best of 2
    python benchmarks/bench_cpu_bf16.py --parts speed --repeat 3
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from common import REPO, TINY, machine, random_pipeline, synthetic_clip

GOLDEN = REPO / "tests" / "fixtures" / "golden" / "case_a"
VARIANTS = ("bf16", "bf16, decoder fp32")


def with_dtype(pipe, variant: str):
    """A copy of the fp32 ``pipe`` in bf16; ``decoder fp32``: the VAE decoder stays in fp32
    (its input cast up by a hook), everything else in bf16."""
    out = copy.deepcopy(pipe).to(dtype=torch.bfloat16)
    if variant.endswith("decoder fp32"):
        out.vae.post_quant_conv.float()
        out.vae.decoder.float()
        out.vae.post_quant_conv.register_forward_pre_hook(lambda _m, args: (args[0].float(), *args[1:]))
    return out


def renormalise(v: np.ndarray) -> np.ndarray:
    return (v - v.min()) / (v.max() - v.min()) * 2 - 1


def differences(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max": float(d.max()), "mean": float(d.mean())}


def accuracy(pipe, frames: np.ndarray, dilations: list[int]) -> dict:
    """Per variant: differences from fp32 of the co-aligned prediction (fast), of the
    reference optimiser's result on the same snippets, and of the raw snippets."""
    from rollingdepth.method.coalign import coalign

    kwargs = dict(processing_res=0, dilations=dilations, snippet_lengths=[3], refine_step=0, coalign="fast",
                  max_vae_bs=4, unet_batch_size=4)

    def run(p):
        t0 = time.perf_counter()
        out = p(frames, generator=torch.Generator().manual_seed(0), **kwargs)
        ref, _ = coalign(out.snippets, out.settings["dilations"], mode="reference")
        return out, renormalise(ref), time.perf_counter() - t0

    base, base_ref, seconds = run(pipe)
    result = {"fp32": {"seconds": seconds}}
    for variant in VARIANTS:
        out, ref, seconds = run(with_dtype(pipe, variant))
        result[variant] = {
            "seconds": seconds,
            "coaligned_fast": differences(out.depth_coaligned, base.depth_coaligned),
            "coaligned_reference": differences(ref, base_ref),
            "snippets": differences(np.concatenate([s.ravel() for s in out.snippets]),
                                    np.concatenate([s.ravel() for s in base.snippets])),
        }
    return result


def best_of(fn, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if best is None or wall < best["wall"]:
            best = {"wall": wall, "cpu": cpu}
    return best


@torch.no_grad()
def speed(pipe, repeat: int) -> dict:
    """UNet call (3 frames) and VAE decode (3 frames) at latents 27 x 48, per variant."""
    result = {}
    for variant in ("fp32", *VARIANTS):
        p = pipe if variant == "fp32" else with_dtype(pipe, variant)
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(3, 4, 27, 48, generator=gen).to(torch.float32 if variant == "fp32" else torch.bfloat16)
        entry = {"decode": best_of(lambda: p.decode_depth(z, (432, 768)), repeat)}
        if not variant.endswith("decoder fp32"):  # its UNet is the bf16 one: only the decode differs
            p.scheduler.set_timesteps(1)
            t = p.scheduler.timesteps[0]
            p.empty_text_embedding()
            entry["unet"] = best_of(lambda: p.denoise_snippets(z, z, t, 3), repeat)
        result[variant] = entry
        print(f"  {variant:20s} " + ", ".join(f"{k} {v['wall']:.1f} s wall ({v['cpu']:.1f} s CPU)"
                                                for k, v in entry.items()), flush=True)
    return result


def print_accuracy(name: str, acc: dict) -> None:
    print(f"{name}: fp32 run {acc['fp32']['seconds']:.1f} s")
    for variant in VARIANTS:
        a = acc[variant]
        print(f"  {variant:20s} ({a['seconds']:.1f} s): co-aligned (fast) max {a['coaligned_fast']['max']:.2e} "
              f"mean {a['coaligned_fast']['mean']:.2e}; reference optimiser max {a['coaligned_reference']['max']:.2e} "
              f"mean {a['coaligned_reference']['mean']:.2e}; snippets max {a['snippets']['max']:.2e} "
              f"mean {a['snippets']['mean']:.2e}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["golden", "sd2", "speed"], choices=["golden", "sd2", "speed"])
    p.add_argument("--repeat", type=int, default=2, help="speed: best of this many calls")
    p.add_argument("--frames", type=int, default=12, help="sd2 accuracy: frames of the synthetic clip (64 x 96)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    from rollingdepth import RollingDepthPipeline
    from rollingdepth.method.device import cpu_has_native_bf16

    print(f"machine: {machine()}; native bf16: {cpu_has_native_bf16()}", flush=True)
    results = {}
    if "golden" in args.parts:
        tiny = RollingDepthPipeline.from_pretrained(str(TINY), torch_dtype=torch.float32)
        results["golden"] = accuracy(tiny, np.load(GOLDEN / "frames_uint8.npy"), [1, 10])
        print_accuracy("golden case_a (tiny checkpoint, 40 frames 64x96, d 1,10)", results["golden"])
    if "sd2" in args.parts or "speed" in args.parts:
        sd2 = random_pipeline("sd2", torch.float32)
        if "sd2" in args.parts:
            frames, _ = synthetic_clip(args.frames, 64, 96)
            results["sd2"] = accuracy(sd2, frames, [1, 3])
            print_accuracy(f"random SD2-sized weights ({args.frames} frames 64x96, d 1,3)", results["sd2"])
        if "speed" in args.parts:
            print(f"speed, SD2-sized, 3 frames at latents 27x48, best of {args.repeat}:", flush=True)
            results["speed"] = speed(sd2, args.repeat)
            fp32, bf16 = results["speed"]["fp32"], results["speed"]["bf16"]
            print("bf16 speed-up: " + ", ".join(f"{k} {fp32[k]['wall'] / bf16[k]['wall']:.2f}x wall, "
                                                f"{fp32[k]['cpu'] / bf16[k]['cpu']:.2f}x CPU" for k in fp32))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
