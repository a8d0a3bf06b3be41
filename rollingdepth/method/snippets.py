"""Which frames go together: dilation capping, snippet indices and the refinement schedule."""

from __future__ import annotations

import numpy as np

__all__ = [
    "MAX_SNIPPET_LEN",
    "cap_dilation",
    "plan_snippets",
    "refine_dilations",
    "snippet_indices",
]

# Longest snippet accepted (num_view). The checkpoint was trained with 3; attention cost
# grows with the square of the joined token count, so much longer snippets make no sense.
MAX_SNIPPET_LEN = 16


def cap_dilation(dilation: int, snippet_len: int, num_frames: int) -> int:
    """The reference's cap, ``min(d, floor(N / n) - 1)``, but never below 1."""
    max_dilation = num_frames // snippet_len - 1
    return max(1, min(dilation, max_dilation))


def snippet_indices(num_frames: int, snippet_len: int, dilation: int) -> np.ndarray:
    """Frame indices of every snippet, stride 1: row ``i`` is ``i, i+d, ..., i+(n-1)d``.

    Returns int64 ``[S, n]`` with ``S = N - (n-1)d``; raises ``ValueError`` when the
    snippet span does not fit into the video.
    """
    span = (snippet_len - 1) * dilation + 1
    if span > num_frames:
        raise ValueError(
            f"dilation {dilation} with snippet length {snippet_len} spans {span} frames, "
            f"more than the video's {num_frames}"
        )
    starts = np.arange(num_frames - span + 1, dtype=np.int64)  # [S]
    return starts[:, None] + dilation * np.arange(snippet_len, dtype=np.int64)[None, :]


def plan_snippets(
    num_frames: int,
    dilations: list[int],
    snippet_lengths: list[int],
    cap: bool,
) -> list[tuple[int, int]]:
    """The ``(dilation, snippet length)`` pairs actually run on a video of ``num_frames``.

    Snippets longer than the video are shortened to it; with ``cap`` each dilation is capped
    (see :func:`cap_dilation`); pairs that became equal are used once, in first-seen order.
    Without ``cap``, a dilation whose snippets do not fit raises ``ValueError``.
    """
    plan: list[tuple[int, int]] = []
    for dilation, length in zip(dilations, snippet_lengths):
        n = min(length, num_frames)
        d = cap_dilation(dilation, n, num_frames) if cap else dilation
        if n == 1:
            d = 1  # single frames: the dilation has no meaning
        span = (n - 1) * d + 1
        if span > num_frames:
            raise ValueError(
                f"dilations: {dilation} with snippet length {n} needs {span} frames but the "
                f"video has {num_frames}; enable cap_dilation or use a smaller dilation"
            )
        if (d, n) not in plan:
            plan.append((d, n))
    return plan


def refine_dilations(refine_step: int, start_dilation: int) -> list[int]:
    """Dilation of each refinement step: ``int((1 - i/R) * (d0 - 1)) + 1`` for i < R."""
    return [int((1 - i / refine_step) * (start_dilation - 1)) + 1 for i in range(refine_step)]
