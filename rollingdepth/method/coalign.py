"""Co-alignment: one scale and shift per snippet so that all snippets agree, then a merge.

The objective (the reference's, see ``docs/coalign.md``): snippets are shifted by their
global minimum, cropped by 2 pixels and subsampled ``[::10, ::10]``; with ``y = s*x + t``
per snippet, every frame's target is the mean of ``y`` over the snippet frames showing it
(and likewise for ``1/clip(y, 1e-3)``); the loss is

    mean over a dense [sum n, N, P] layout of |y - target| / mean_p|target|
  + the same in inverse space
  + sum over dilation groups of 0.1 * mean(max(0, 1-s)^2) + 10 * mean(t^2)

``mode="reference"`` runs the reference optimiser exactly (Adam, lr 1e-3, betas
(0.5, 0.9), 2000 iterations, on the dense layout). ``mode="fast"`` minimises the same loss
on a compact per-snippet layout (no dense ``[sum n, N, P]`` tensor) from the best of a few
starting points (one is a least-squares alignment), with a short Adam schedule (100 steps,
step size decaying from 0.1 to 1e-3), keeping the best point it visits.

On a CPU, the solve and the merge treat subnormal floats as zero (``FLUSH_DENORMALS``), so
that near-zero residuals (snippets that nearly agree: a static scene) cannot slow the
arithmetic down. (Under run-video's heap setting, the run's solve reuses its freed
temporaries: :func:`~rollingdepth.runtime.heap.heap_reuse`.) Figures: ``docs/performance.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rollingdepth.method.device import flush_denormals
from rollingdepth.method.snippets import snippet_indices

__all__ = ["COALIGN_MODES", "CoalignProblem", "SnippetMerge", "coalign", "coalign_loss", "merge_snippets",
           "problem_from_subsampled", "solve", "subsample"]

COALIGN_MODES = ("fast", "reference")

# Constants of the reference optimisation.
BORDER = 2
SUBSAMPLE = 10
INV_CLIP = 1e-3
DEPTH_LOSS_WEIGHT = 1.0
SCALE_REG = 0.1
SHIFT_REG = 10.0
REF_LR = 1e-3
REF_BETAS = (0.5, 0.9)
REF_ITERATIONS = 2000
CHUNK = 64  # snippets per chunk in the compact computations
FAST_ITERATIONS = 100  # Adam steps after the best starting point
ALS_ROUNDS = 8
FLUSH_DENORMALS = True  # subnormals as zero on the host during solve and merge (False: benchmarks' "before")


@dataclass
class CoalignProblem:
    """The subsampled snippets and their frame indices, ready for optimisation."""

    x: list[torch.Tensor]  # per group: [S, n, P] min-shifted, cropped, subsampled
    idx: list[torch.Tensor]  # per group: [S, n] int64 frame index
    num_frames: int
    count: torch.Tensor  # [N] how many snippet frames show each frame
    min_value: float

    @property
    def slots(self) -> int:
        """Number of rows of the reference's dense layout (sum of snippet lengths)."""
        return sum(int(i.shape[1]) for i in self.idx)

    @property
    def pixels(self) -> int:
        return int(self.x[0].shape[-1])


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))


def _check(snippets: Sequence, dilations: Sequence[int], num_frames: int | None) -> int:
    if len(snippets) == 0:
        raise ValueError("snippets: need at least one group of snippets")
    if len(snippets) != len(dilations):
        raise ValueError(
            f"dilations: got {len(dilations)} values for {len(snippets)} snippet groups"
        )
    shapes = set()
    frames = set()
    for snip, d in zip(snippets, dilations):
        if snip.ndim != 4:
            raise ValueError(f"snippets: expected [S, n, H, W] arrays, got shape {tuple(snip.shape)}")
        if int(d) < 1:
            raise ValueError(f"dilations: must be >= 1, got {d}")
        s, n = int(snip.shape[0]), int(snip.shape[1])
        shapes.add(tuple(snip.shape[2:]))
        frames.add(s + (n - 1) * int(d))
    if len(shapes) != 1:
        raise ValueError(f"snippets: all groups need the same H x W, got {sorted(shapes)}")
    if num_frames is None:
        if len(frames) != 1:
            raise ValueError(f"snippets: groups imply different frame counts {sorted(frames)}")
        num_frames = frames.pop()
    elif frames != {num_frames}:
        raise ValueError(f"snippets: groups imply {sorted(frames)} frames, expected {num_frames}")
    return num_frames


def build_problem(
    snippets: Sequence,
    dilations: Sequence[int],
    num_frames: int | None = None,
    device: torch.device | str | None = None,
) -> CoalignProblem:
    """Min-shift, crop and subsample the snippets (float32), and index their frames."""
    num_frames = _check(snippets, dilations, num_frames)
    min_value = min(float(_as_tensor(s).min()) for s in snippets)
    subsampled = [subsample(_as_tensor(s).to(torch.float32)) for s in snippets]
    return problem_from_subsampled(subsampled, dilations, num_frames, min_value, device)


def subsample(maps: torch.Tensor) -> torch.Tensor:
    """The pixels the optimisation sees: crop 2 at each border, every 10th: ``[..., P]``."""
    h, w = maps.shape[-2:]
    sub = maps[..., BORDER : h - BORDER, BORDER : w - BORDER][..., ::SUBSAMPLE, ::SUBSAMPLE]
    return sub.reshape(*maps.shape[:-2], -1)


def problem_from_subsampled(
    subsampled: Sequence, dilations: Sequence[int], num_frames: int, min_value: float, device=None,
    inplace: bool = False,
) -> CoalignProblem:
    """A problem from already subsampled snippets (``[S, n, P]`` per group, not min-shifted).

    ``inplace``: shift contiguous float32 arrays already on ``device`` in place and keep them,
    rather than holding a second copy (the caller's arrays are changed).
    """
    device = torch.device(device or "cpu")
    xs, idxs = [], []
    count = torch.zeros(num_frames, dtype=torch.float32, device=device)
    for sub, d in zip(subsampled, dilations):
        t = _as_tensor(sub)
        if inplace and t.dtype == torch.float32 and t.device == device and t.is_contiguous():
            xs.append(t.sub_(min_value))
        else:
            xs.append((t.to(device=device, dtype=torch.float32) - min_value).contiguous())
        idx = torch.from_numpy(snippet_indices(num_frames, t.shape[1], int(d))).to(device)
        idxs.append(idx)
        count.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), device=device))
    if xs[0].shape[-1] == 0:
        raise ValueError("snippets: frames are too small to co-align (need more than 4 x 4 pixels)")
    return CoalignProblem(xs, idxs, num_frames, count, min_value)


def solve(problem: CoalignProblem, mode: str = "fast", iterations: int | None = None):
    """Scales and shifts (one float32 array of S per group), the loss, and the iterations run."""
    if mode not in COALIGN_MODES:
        raise ValueError(f"coalign: unknown mode {mode!r}; expected one of {COALIGN_MODES}")
    with flush_denormals(FLUSH_DENORMALS and problem.x[0].device.type == "cpu"):
        if mode == "reference":
            iters = REF_ITERATIONS if iterations is None else iterations
            scales, shifts = _solve_reference(problem, iters)
        else:
            iters = FAST_ITERATIONS if iterations is None else iterations
            scales, shifts = _solve_fast(problem, iters)
        loss = coalign_loss(problem, scales, shifts)
    return [s.cpu().numpy() for s in scales], [t.cpu().numpy() for t in shifts], loss, iters


def _regulariser(scales: list[torch.Tensor], shifts: list[torch.Tensor]) -> torch.Tensor:
    reg = 0.0
    for s, t in zip(scales, shifts):
        reg = reg + SCALE_REG * torch.clamp(1.0 - s, min=0.0).pow(2).mean() + SHIFT_REG * t.pow(2).mean()
    return reg


def _chunks(problem: CoalignProblem, scales, shifts):
    """Per group and chunk of snippets: (group, slice, x [c, n, P], s [c], t [c], idx [c, n])."""
    for g, (x, s, t, idx) in enumerate(zip(problem.x, scales, shifts, problem.idx)):
        for a in range(0, x.shape[0], CHUNK):
            sl = slice(a, a + CHUNK)
            yield g, sl, x[sl], s[sl], t[sl], idx[sl]


@torch.no_grad()
def _compact_value_and_grad(problem: CoalignProblem, scales, shifts, grad: bool = True):
    """The data terms of the loss, and their gradients with the targets held constant.

    Works through the snippets in chunks, so that no temporary grows with the video beyond
    the ``[N, P]`` targets. Returns ``(value, scale grads, shift grads)`` (grads ``None``
    when ``grad`` is False).
    """
    n_frames, pixels = problem.num_frames, problem.pixels
    device = problem.x[0].device
    acc = torch.zeros(2, n_frames, pixels, device=device)
    for _, _, x, s, t, idx in _chunks(problem, scales, shifts):
        y = x * s[:, None, None] + t[:, None, None]  # [c, n, P]
        flat = idx.reshape(-1)
        acc[0].index_add_(0, flat, y.reshape(-1, pixels))
        acc[1].index_add_(0, flat, (1.0 / y.clamp(min=INV_CLIP)).reshape(-1, pixels))
    target = acc.div_(problem.count[None, :, None])  # [2, N, P], in place
    weight = 1.0 / target.abs().mean(-1)  # [2, N]
    denom = problem.slots * n_frames * pixels
    total = torch.zeros((), device=device, dtype=torch.float64)
    g_s = [torch.zeros_like(s) for s in scales] if grad else None
    g_t = [torch.zeros_like(t) for t in shifts] if grad else None
    for g, sl, x, s, t, idx in _chunks(problem, scales, shifts):
        y = x * s[:, None, None] + t[:, None, None]
        inv = 1.0 / y.clamp(min=INV_CLIP)
        d0 = y - target[0][idx]
        d1 = inv - target[1][idx]
        w0 = weight[0][idx][..., None]
        w1 = DEPTH_LOSS_WEIGHT * weight[1][idx][..., None]
        total += (d0.abs() * w0).sum(dtype=torch.float64) + (d1.abs() * w1).sum(dtype=torch.float64)
        if grad:
            # d|y - T|/dy = sign; d(1/clamp(y))/dy = -1/y^2 where y >= clip, else 0
            dinv = torch.where(y >= INV_CLIP, -inv * inv, torch.zeros_like(inv))
            gy = torch.sign(d0) * w0 + torch.sign(d1) * w1 * dinv
            g_s[g][sl] = (gy * x).sum(dim=(1, 2)) / denom
            g_t[g][sl] = gy.sum(dim=(1, 2)) / denom
    return float(total / denom), g_s, g_t


def _dense_terms(
    problem: CoalignProblem, scales: list[torch.Tensor], shifts: list[torch.Tensor]
) -> torch.Tensor:
    """The data terms on the reference's dense ``[sum n, N, P]`` layout."""
    n_frames, pixels, device = problem.num_frames, problem.pixels, problem.x[0].device
    shape = (problem.slots, n_frames, pixels)
    dense = torch.zeros(shape, device=device)
    dense_inv = torch.zeros(shape, device=device)
    filled = torch.zeros(shape, device=device)
    row = 0
    for x, s, t, idx in zip(problem.x, scales, shifts, problem.idx):
        n = idx.shape[1]
        rows = torch.arange(row, row + n, device=device)[:, None]  # [n, 1]
        y = (x * s[:, None, None] + t[:, None, None]).permute(1, 0, 2)  # [n, S, P]
        dense[rows, idx.T] = y
        dense_inv[rows, idx.T] = y.clamp(min=INV_CLIP) ** -1
        filled[rows, idx.T] = 1.0
        row += n
    covered = filled.sum(0)
    with torch.no_grad():
        target = dense.sum(0) / covered
        target_inv = dense_inv.sum(0) / covered
        norm = target.abs().mean(-1, keepdim=True)
        norm_inv = target_inv.abs().mean(-1, keepdim=True)
    loss = torch.abs((dense - target) * filled / norm).mean()
    loss_inv = torch.abs((dense_inv - target_inv) * filled / norm_inv).mean()
    return loss + DEPTH_LOSS_WEIGHT * loss_inv


def coalign_loss(
    problem: CoalignProblem, scales: Sequence, shifts: Sequence, dense: bool = False
) -> float:
    """The reference's loss at the given scales and shifts (one array of S per group)."""
    s = [_as_tensor(v).to(problem.x[0].device, torch.float32).reshape(-1) for v in scales]
    t = [_as_tensor(v).to(problem.x[0].device, torch.float32).reshape(-1) for v in shifts]
    with torch.no_grad():
        terms = float(_dense_terms(problem, s, t)) if dense else _compact_value_and_grad(problem, s, t, grad=False)[0]
        return terms + float(_regulariser(s, t))


@torch.enable_grad()
def _solve_reference(problem: CoalignProblem, iterations: int = REF_ITERATIONS):
    device = problem.x[0].device
    scales = [torch.ones(x.shape[0], device=device, requires_grad=True) for x in problem.x]
    shifts = [torch.zeros(x.shape[0], device=device, requires_grad=True) for x in problem.x]
    optimiser = torch.optim.Adam(scales + shifts, lr=REF_LR, betas=REF_BETAS)
    for _ in range(iterations):
        optimiser.zero_grad()
        loss = _dense_terms(problem, scales, shifts) + _regulariser(scales, shifts)
        loss.backward()
        optimiser.step()
    return [s.detach() for s in scales], [t.detach() for t in shifts]


def _least_squares_alignment(problem: CoalignProblem, rounds: int = ALS_ROUNDS):
    """Alternate: per-frame mean targets, then each snippet's closed-form L2 fit to them."""
    device = problem.x[0].device
    scales = [torch.ones(x.shape[0], device=device) for x in problem.x]
    shifts = [torch.zeros(x.shape[0], device=device) for x in problem.x]
    # per-snippet sums of x and x^2 do not change between rounds
    sx = [x.sum(dim=(1, 2)) for x in problem.x]  # [S]
    sxx = [torch.cat([c.pow(2).sum(dim=(1, 2)) for c in x.split(CHUNK)]) for x in problem.x]  # chunked: no [S, n, P] temporary
    count = [float(x.shape[1] * x.shape[2]) for x in problem.x]
    for _ in range(rounds):
        target = torch.zeros(problem.num_frames, problem.pixels, device=device)
        for _, _, x, s, t, idx in _chunks(problem, scales, shifts):
            target.index_add_(0, idx.reshape(-1), (x * s[:, None, None] + t[:, None, None]).reshape(-1, problem.pixels))
        target /= problem.count[:, None]
        sy = [torch.zeros_like(s) for s in scales]
        sxy = [torch.zeros_like(s) for s in scales]
        for g, sl, x, _, _, idx in _chunks(problem, scales, shifts):
            tg = target[idx]  # [c, n, P]
            sy[g][sl], sxy[g][sl] = tg.sum(dim=(1, 2)), (x * tg).sum(dim=(1, 2))
        for g in range(len(scales)):
            det = count[g] * sxx[g] - sx[g] ** 2
            ok = det.abs() > 1e-12 * count[g] ** 2
            s_new = (count[g] * sxy[g] - sx[g] * sy[g]) / torch.where(ok, det, torch.ones_like(det))
            t_new = (sy[g] - s_new * sx[g]) / count[g]
            scales[g] = torch.where(ok, s_new, scales[g])
            shifts[g] = torch.where(ok, t_new, sy[g] / count[g] - scales[g] * sx[g] / count[g])
    return scales, shifts


@torch.enable_grad()
def _solve_fast(
    problem: CoalignProblem,
    iterations: int = FAST_ITERATIONS,
    lr: float = 1e-1,
    final_lr: float = 1e-3,
    warm_start: bool = True,
):
    """Best of a few starting points, then Adam with a cosine-decaying step; best point wins.

    Starting points: the reference's (s=1, t=0) and blends of it with a least-squares
    alignment (full alignment can cost more in the shift penalty than it gains). The loss is
    evaluated at every point visited (it is computed for the gradient anyway) and the lowest
    one is returned.
    """
    device = problem.x[0].device
    ones = [torch.ones(x.shape[0], device=device) for x in problem.x]
    zeros = [torch.zeros(x.shape[0], device=device) for x in problem.x]
    candidates = [(ones, zeros)]
    if warm_start:
        als_s, als_t = _least_squares_alignment(problem)
        for lam in (0.25, 0.5, 1.0):  # the shift penalty may want less than full alignment
            for mu in (0.0, 0.5, 1.0):
                candidates.append(([1 + lam * (s - 1) for s in als_s], [lam * mu * t for t in als_t]))
    best = min(((coalign_loss(problem, s, t), (s, t)) for s, t in candidates), key=lambda c: c[0])

    scales = [s.clone().requires_grad_(True) for s in best[1][0]]
    shifts = [t.clone().requires_grad_(True) for t in best[1][1]]
    optimiser = torch.optim.Adam(scales + shifts, lr=lr, betas=REF_BETAS)
    for i in range(iterations + 1):
        optimiser.zero_grad()
        data, g_s, g_t = _compact_value_and_grad(problem, [s.detach() for s in scales], [t.detach() for t in shifts])
        reg = _regulariser(scales, shifts)
        value = data + reg.item()  # the loss at the current point: targets are its own means
        if value < best[0]:
            best = (value, ([s.detach().clone() for s in scales], [t.detach().clone() for t in shifts]))
        if i == iterations:
            break
        reg.backward()
        for p, g in zip(scales + shifts, g_s + g_t):
            p.grad += g
        for group in optimiser.param_groups:
            group["lr"] = final_lr + 0.5 * (lr - final_lr) * (1 + math.cos(math.pi * i / iterations))
        optimiser.step()
    return best[1]


class SnippetMerge:
    """The merge, written once: each frame is the mean of ``s*(x - min) + t`` over the snippet
    frames that show it. Rows of snippet frames are added in any order and any number of
    calls (all of a video at once, or window by window as they stream in); :meth:`means` gives
    the frames.

    ``num_frames`` frames of ``size`` (H, W) on ``device``; ``min_value``: the snippets' global
    minimum.
    """

    def __init__(self, num_frames: int, size: tuple[int, int], min_value: float, device=None):
        self.min_value = min_value
        self.sums = torch.zeros((num_frames, *size), dtype=torch.float32, device=device)
        self.count = torch.zeros(num_frames, dtype=torch.float32, device=device)

    def add(self, frames: torch.Tensor, maps: torch.Tensor, scales: torch.Tensor, shifts: torch.Tensor,
            inplace: bool = False) -> None:
        """Snippet frames ``maps`` (float32 ``[b, H, W]``) showing ``frames`` (``[b]``, indices
        into this merge's frames), each with its snippet's scale and shift (``[b]``).
        ``inplace``: ``maps`` may be overwritten (a fresh read, not needed again)."""
        y = maps.sub_(self.min_value) if inplace else maps - self.min_value
        y = y.mul_(scales[:, None, None]).add_(shifts[:, None, None])  # s * (x - min) + t
        self.sums.index_add_(0, frames, y)
        self.count.index_add_(0, frames, torch.ones(len(frames), device=self.count.device))

    def means(self) -> torch.Tensor:
        """The merged frames ``[num_frames, H, W]``."""
        return self.sums / self.count[:, None, None]


def merge_snippets(
    snippets: Sequence,
    dilations: Sequence[int],
    scales: Sequence,
    shifts: Sequence,
    min_value: float,
    num_frames: int,
) -> np.ndarray:
    """Every frame: the mean of ``s*(x - min) + t`` over the snippet frames that show it
    (:class:`SnippetMerge` over whole snippet groups ``[S, n, H, W]`` in memory)."""
    merge = SnippetMerge(num_frames, tuple(snippets[0].shape[-2:]), min_value)
    with flush_denormals(FLUSH_DENORMALS):
        for snip, d, s, t in zip(snippets, dilations, scales, shifts):
            x = _as_tensor(snip).to("cpu", torch.float32)
            n = x.shape[1]
            s = _as_tensor(s).to("cpu", torch.float32).reshape(-1).repeat_interleave(n)  # per snippet frame
            t = _as_tensor(t).to("cpu", torch.float32).reshape(-1).repeat_interleave(n)
            idx = torch.from_numpy(snippet_indices(num_frames, n, int(d))).reshape(-1)
            merge.add(idx, x.reshape(-1, *x.shape[-2:]), s, t)
        return merge.means().numpy()


def coalign(
    snippets: Sequence,
    dilations: Sequence[int],
    mode: str = "fast",
    *,
    num_frames: int | None = None,
    device: torch.device | str | None = None,
    iterations: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Co-align snippets (list per dilation of float32 ``[S, n, H, W]``) into one video.

    Returns the merged depth ``[N, H, W]`` (before re-normalisation) and
    ``{"loss", "scales", "shifts", "min_value", "mode", "iterations"}``, with one array of S
    scales and one of S shifts per dilation, applied to the min-shifted snippets.
    ``iterations`` overrides the mode's default (for benchmarks).
    """
    if mode not in COALIGN_MODES:
        raise ValueError(f"coalign: unknown mode {mode!r}; expected one of {COALIGN_MODES}")
    problem = build_problem(snippets, dilations, num_frames, device)
    scales, shifts, loss, iters = solve(problem, mode, iterations)
    depth = merge_snippets(snippets, dilations, scales, shifts, problem.min_value, problem.num_frames)
    info = {
        "loss": loss,
        "scales": scales,
        "shifts": shifts,
        "min_value": problem.min_value,
        "mode": mode,
        "iterations": iters,
    }
    return depth, info
