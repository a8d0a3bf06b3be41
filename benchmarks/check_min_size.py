"""The smallest frames the real model's layout takes: the SD2 UNet and VAE of
``prs-eth/rollingdepth-v1-0`` built with random weights (``common.random_pipeline("sd2")``, no
download), run on tiny clips through ``RollingDepthPipeline`` at their own size. run-video refuses
frames under ``MIN_LATENT`` latent rows (``runtime/passes.py``: 3, i.e. 24 pixels with the VAE's
factor 8) with one line naming ``--res``; this checks that every size from there up runs and that
the smaller ones get that line, on the real layout rather than the tiny test checkpoint.

    python benchmarks/check_min_size.py        # about 3 minutes on 2 CPU cores, 5 GB of memory
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import random_pipeline  # noqa: E402

SIZES = [(24, 24), (24, 200), (25, 203), (40, 104), (16, 200), (8, 200)]  # (H, W)


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    pipe = random_pipeline("sd2")
    print(f"# SD2 layout, random weights, built in {time.time() - started:.0f} s; 6 frames each, dilations 1,2, "
          "snippets of 3, fp32 on the CPU")
    for h, w in SIZES:
        frames = np.random.default_rng(0).integers(0, 255, (6, h, w, 3), dtype=np.uint8)
        started = time.time()
        try:
            out = pipe(frames, processing_res=0, dilations=[1, 2], snippet_lengths=[3], refine_step=0, max_vae_bs=2,
                       unet_batch_size=2)
            depth = np.asarray(out.depth)
            print(f"{h}x{w}: ran, depth {tuple(depth.shape)}, finite {bool(np.isfinite(depth).all())}, "
                  f"{time.time() - started:.1f} s")
        except ValueError as exc:
            print(f"{h}x{w}: refused: {exc}")


if __name__ == "__main__":
    main()
