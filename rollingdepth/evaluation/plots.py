"""eval-depth's plots: a video's metrics per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rollingdepth.io.video_io import atomic_path

__all__ = ["plot_per_frame"]


def plot_per_frame(path: Path, stem: str, per_frame: dict) -> None:
    """One panel per metric (``per_frame``: name -> values per frame), written to ``path`` as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(per_frame)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.6 * rows), squeeze=False)
    labels = {"abs_rel": "AbsRel per frame", "opw": "OPW (frame t to t+1)"}
    for ax, (key, values) in zip(axes[:, 0], per_frame.items()):
        ax.plot(np.arange(len(values)), values, lw=1.2)
        ax.set_ylabel(labels.get(key, key))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(stem)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
