"""The two scoring protocols of ``eval-depth --protocol``: ours (``rollingdepth``, the default)
and Video-Depth-Anything's benchmark code (``vda``); ``docs/evaluation.md`` lists how they differ."""

from __future__ import annotations

import numpy as np

from rollingdepth.evaluation.metrics import EvalResult, Protocol, evaluate_video
from rollingdepth.evaluation.protocol_vda import DEPTH_CAP, evaluate_video_vda

__all__ = ["PROTOCOLS", "default_max_depth", "score_video"]

PROTOCOLS = ("rollingdepth", "vda")


def default_max_depth(protocol: Protocol, dataset: str | None, ours: float) -> float:
    """The depth cap when none is given: the dataset's own (``ours``) under our protocol, the
    peers' per-dataset cap under ``vda`` (``ours`` for a dataset they do not list)."""
    if protocol.name == "vda" and dataset in DEPTH_CAP:
        return DEPTH_CAP[dataset]
    return ours


def score_video(pred: np.ndarray, gt: np.ndarray, protocol: Protocol, *, mask: np.ndarray | None = None,
                rgb: np.ndarray | None = None, cameras=None) -> EvalResult:
    """Score one prediction ``[N, h, w]`` against GT depth ``[N, H, W]`` under ``protocol``:
    :func:`~rollingdepth.evaluation.metrics.evaluate_video` for ours, or
    :func:`~rollingdepth.evaluation.protocol_vda.evaluate_video_vda` (which fixes the alignment
    and the per-frame averaging, and uses only ``protocol.max_depth``) for ``vda``."""
    if protocol.name == "vda":
        return evaluate_video_vda(pred, gt, max_depth=protocol.max_depth, mask=mask, rgb=rgb, cameras=cameras)
    return evaluate_video(pred, gt, mask=mask, rgb=rgb, cameras=cameras, protocol=protocol)
