"""The method, once: RollingDepth's passes over a store of intermediate results.

:func:`run` is what ``RollingDepthPipeline.__call__`` (over a :class:`~rollingdepth.runtime.stores.MemoryStore`)
and ``run-video`` (over a :class:`~rollingdepth.runtime.stores.DiskStore`) both call. Its passes:

1. :func:`encode_pass`: frames stream in (any iterable of uint8 ``[H, W, 3]``), are resized,
   normalised and VAE-encoded in batches; their latents stay on the host.
2. :func:`snippet_pass`: every snippet goes through the UNet in batches, and each snippet frame
   is decoded once, right away: its map goes to the store (or, without room for the maps,
   only its latent), every 10th pixel stays in memory for co-alignment.
3. co-alignment: one scale and shift per snippet from the subsampled maps
   (:func:`rollingdepth.method.coalign.solve`).
4. :func:`merge_pass`: window by window, each frame is the mean of ``s*(x - min) + t`` over
   the snippet frames that show it.
5. :func:`renormalise`: the merged video to [-1, 1], chunk by chunk.
6. :func:`refine_pass` (optional): coarse-to-fine refinement, decoded into the output.

With the disk store, host memory grows by well under 0.5 MB per frame at 768 x 432 and
accelerator memory does not grow with the video at all (co-alignment moves to the host
beyond a fixed budget). Device-to-host copies and file writes run in background threads
(:class:`~rollingdepth.runtime.background.HostWriter`), so the accelerator does not wait for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch

from rollingdepth.runtime.background import HostWriter, prefetch
from rollingdepth.method.coalign import problem_from_subsampled, solve, subsample
from rollingdepth.method.device import to_device
from rollingdepth.method.num_view import choose_num_view, motion_score
from rollingdepth.method.settings import MethodSettings
from rollingdepth.method.snippets import plan_snippets, refine_dilations, snippet_indices

if TYPE_CHECKING:
    from rollingdepth.method.pipeline import RollingDepthPipeline

__all__ = ["MERGE_WINDOW", "RunResult", "encode_pass", "merge_pass", "refine_pass", "renormalise", "run",
           "snippet_pass"]

# Called as callback(stage, done, total) while a stage runs.
ProgressCallback = Callable[[str, int, int], None]

MERGE_WINDOW = 32  # frames merged (and re-normalised) at a time
# Co-alignment runs on the accelerator only while its problem (about 3x the subsampled maps)
# fits in this many bytes; longer videos co-align on the host, so that accelerator memory has
# a ceiling that does not depend on the video's length.
COALIGN_DEVICE_BYTES = 1 << 30
MOTION_PAIRS = 16  # frame pairs sampled for the automatic num_view


@dataclass
class RunResult:
    """What :func:`run` produced; arrays belong to the store (NumPy or :class:`NpyFile`)."""

    num_frames: int
    input_size: tuple[int, int]
    size: tuple[int, int]  # processing size (H, W)
    depth: Any  # [N, H, W] float32, the prediction
    depth_coaligned: Any  # [N, H, W] float32 after co-alignment and re-normalisation
    snippets: list  # per dilation [S, n, H, W] decoded maps, or None where only latents were kept
    coalign_loss: float
    depth_range: tuple[float, float]  # min and max of the prediction
    settings: dict  # the values actually used (after capping)
    timings: dict = field(default_factory=dict)  # seconds per stage
    counts: dict = field(default_factory=dict)  # vae_encodes, vae_decodes (frames), unet_calls, unet_frames


def _silent(stage: str, done: int, total: int) -> None:
    pass


@torch.no_grad()
def run(
    pipe: "RollingDepthPipeline",
    frames: Iterable[np.ndarray],
    store,
    settings: MethodSettings,
    *,
    generator: torch.Generator | None = None,
    callback: ProgressCallback | None = None,
    num_frames_hint: int | None = None,
    keep_snippets: bool = False,
) -> RunResult:
    """Predict depth for a stream of uint8 RGB frames ``[H, W, 3]`` into ``store``.

    ``settings`` must be validated (:meth:`MethodSettings.validate`). ``num_frames_hint``
    (the expected frame count) lets a dilation that cannot fit fail before any work and
    spreads the motion samples of ``snippet_lengths="auto"``. ``keep_snippets``: the decoded
    snippet maps are an output, so they are kept whatever the store's budget.
    """
    notify = callback or _silent
    pipe.prepare(settings.attn_span)
    pipe.reset_counts()
    device, dtype = pipe.unet.device, pipe.unet.dtype
    timings: dict[str, float] = {}
    if not settings.auto_num_view and num_frames_hint:  # a dilation that cannot fit fails before any work
        plan_snippets(num_frames_hint, settings.dilations, settings.snippet_lengths, settings.cap_dilation)

    # 1. Encode every frame once, as the frames stream in (a resumed run reads what was encoded)
    t0 = time.perf_counter()
    rgb_latents, input_size, size, motion = encode_pass(pipe, frames, settings, store, notify, num_frames_hint)
    num_frames, latent_hw = int(rgb_latents.shape[0]), tuple(rgb_latents.shape[-2:])  # [N, 4, h, w] on the host
    timings["encode"] = time.perf_counter() - t0

    # 2. Snippet plan (num_view chosen here when "auto"), one initial noise for every frame
    auto_choice = None
    lengths = settings.snippet_lengths
    if settings.auto_num_view:
        n_auto, auto_choice = choose_num_view(None, device, latent_hw, dtype, motion=motion, num_frames=num_frames)
        lengths = [n_auto] * len(settings.dilations)
    plan = plan_snippets(num_frames, settings.dilations, lengths, settings.cap_dilation)
    noise = pipe.initial_noise((1, 4, *latent_hw), generator)  # [1, 4, h, w]
    pipe.empty_text_embedding()

    # 3. Snippets through the UNet, each snippet frame decoded once
    t0 = time.perf_counter()
    refining = settings.refine_step > 0
    map_bytes = sum(snippet_indices(num_frames, n, d).size for d, n in plan) * size[0] * size[1]
    map_bytes *= np.dtype(store.maps_dtype(dtype)).itemsize
    output_bytes = num_frames * size[0] * size[1] * 4 * (3 if refining else 2)  # merged, output (coaligned)
    store.expected_bytes = map_bytes + output_bytes
    resumed = store.resumed("snippets")
    keep_maps = resumed["keep_maps"] if resumed else keep_snippets or store.keep_maps(map_bytes, output_bytes)
    snippets = snippet_pass(pipe, rgb_latents, noise, plan, size, settings, store, notify, keep_maps)
    timings["snippets"] = time.perf_counter() - t0 - snippets.decode_seconds
    timings["decode"] = snippets.decode_seconds

    # 4. Co-align on the subsampled maps
    t0 = time.perf_counter()
    scales, shifts, loss, iterations = coalign_pass(pipe, snippets, plan, num_frames, settings, store, notify)
    timings["coalign"] = time.perf_counter() - t0

    # 5. Merge window by window, re-normalise to [-1, 1]
    t0 = time.perf_counter()
    if not refining:
        del rgb_latents  # only refinement needs the frame latents again
    merged = store.array("merged", (num_frames, *size))
    merge_pass(pipe, plan, snippets.sources, snippets.decoded, scales, shifts, snippets.min_value, size,
               settings.max_vae_bs, merged, store, notify)
    coaligned = store.array("coaligned", (num_frames, *size)) if refining else store.output((num_frames, *size))
    lo, hi = renormalise(merged, coaligned, store)
    timings["merge"] = time.perf_counter() - t0

    # 6. Optional coarse-to-fine refinement
    refine_len = min(settings.refine_snippet_len, num_frames)
    refine_d0 = plan_snippets(num_frames, [settings.refine_start_dilation], [refine_len], True)[0][0]
    schedule = refine_dilations(settings.refine_step, refine_d0) if refining else []
    depth, depth_range = coaligned, ((-1.0, 1.0) if hi > lo else (0.0, 0.0))
    if refining:
        t0 = time.perf_counter()
        depth = store.output((num_frames, *size))
        depth_range = refine_pass(pipe, rgb_latents, noise, coaligned, schedule, refine_len, size, settings, depth,
                                  store, notify)
        timings["refine"] = time.perf_counter() - t0

    report = _report_settings(
        pipe, settings, num_frames=num_frames, input_size=input_size, size=size, plan=plan,
        snippets_per_dilation=[len(snippet_indices(num_frames, n, d)) for d, n in plan], refine_len=refine_len,
        refine_d0=refine_d0, refine_schedule=schedule, coalign_iterations=iterations,
        unet_batch_size=snippets.batch_sizes, num_view_auto=auto_choice,
    )
    report["store"] = store.kind
    report["decoded_maps"] = "kept" if keep_maps else "decoded again"
    return RunResult(
        num_frames=num_frames, input_size=tuple(input_size), size=tuple(size), depth=depth,
        depth_coaligned=coaligned, snippets=snippets.sources if keep_maps else [None] * len(plan),
        coalign_loss=float(loss), depth_range=depth_range, settings=report, timings=timings,
        counts=dict(pipe.counts),
    )


def _report_settings(pipe: "RollingDepthPipeline", settings: MethodSettings, *, num_frames, input_size, size, plan, snippets_per_dilation,
                     refine_len, refine_d0, refine_schedule, coalign_iterations, unet_batch_size,
                     num_view_auto) -> dict:
    """The values a run actually used (after capping), as reported in ``settings``."""
    refining = settings.refine_step > 0
    return {
        "num_frames": num_frames,
        "input_size": list(input_size),
        "processing_size": list(size),
        "processing_res": settings.processing_res,
        "dilations": [d for d, _ in plan],
        "snippet_lengths": [n for _, n in plan],
        "snippets_per_dilation": snippets_per_dilation,
        "cap_dilation": settings.cap_dilation,
        "refine_step": settings.refine_step,
        "refine_snippet_len": refine_len if refining else settings.refine_snippet_len,
        "refine_start_dilation": refine_d0 if refining else settings.refine_start_dilation,
        "refine_dilations": refine_schedule,
        "coalign": settings.coalign,
        "coalign_iterations": coalign_iterations,
        "max_vae_bs": settings.max_vae_bs,
        "unet_batch_size": unet_batch_size,
        "dtype": str(pipe.dtype).replace("torch.", ""),
        "device": str(pipe.unet.device),
        "attn_span": settings.attn_span,
        "num_view_auto": num_view_auto,
    }


# ---------------------------------------------------------------------------------- 1. encode
def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_pass(pipe: "RollingDepthPipeline", frames: Iterable[np.ndarray], settings: MethodSettings, store,
                notify: ProgressCallback, num_frames_hint: int | None):
    """Latents ``[N, 4, h, w]`` (host) of every frame, the input and processing sizes, and
    the motion score (for ``snippet_lengths="auto"``, else None).

    The latents go to the store batch by batch (a checkpoint after each); a resumed run
    skips the frames already encoded, or the whole pass once it was complete.
    """
    dtype = pipe.unet.dtype
    done = store.resumed("encode") or {}
    if done.get("complete"):
        log = store.rows("frame_latents", done["row_shape"], store.latents_dtype(dtype))
        notify("encode", len(log), len(log))
        return (torch.from_numpy(log[:]).to(dtype), tuple(done["input_size"]), tuple(done["size"]),
                done.get("motion"))
    skip = done.get("frames", 0)  # frames encoded before (a multiple of the batch size)
    row_shape = done.get("row_shape")  # [4, h, w]
    log, size, input_size, seen = None, None, None, 0
    sample = None  # frames whose small copies score the motion
    if settings.auto_num_view and num_frames_hint:
        sample = {int(i) for i in np.linspace(0, max(num_frames_hint - 2, 0), MOTION_PAIRS).round()}
        sample |= {i + 1 for i in sample}
    small: dict[int, np.ndarray] = {}
    if num_frames_hint:
        notify("encode", 0, num_frames_hint)
    with HostWriter() as writer:  # latents reach the host (and the disk) without the device waiting
        for batch in _batched(frames, settings.max_vae_bs):
            chunk = np.stack(batch)  # [B, H, W, 3] uint8
            if size is None:
                input_size = tuple(chunk.shape[1:3])
                size = pipe.processing_size(input_size[0], input_size[1], settings.processing_res)
            elif tuple(chunk.shape[1:3]) != input_size:
                raise ValueError(f"frames: frame {seen} has size {chunk.shape[1:3]}, the first had {input_size}")
            if settings.auto_num_view:
                small.update({seen + k: _small(f) for k, f in enumerate(batch) if sample is None or seen + k in sample})
            if seen >= skip:
                latents = pipe.encode_frames(chunk, size)  # [B, 4, h, w]
                if log is None:
                    row_shape = list(latents.shape[1:])
                    log = store.rows("frame_latents", row_shape, store.latents_dtype(dtype))
                writer.put(partial(store.append, log), latents.float() if dtype == torch.bfloat16 else latents)
                writer.submit(partial(store.checkpoint, "encode", frames=seen + len(batch), row_shape=row_shape))
            seen += len(batch)
            notify("encode", seen, max(seen, num_frames_hint or 0))
        if seen == 0:
            raise ValueError("frames: the video has no frames")
        if log is None:  # every frame was encoded before
            log = store.rows("frame_latents", row_shape, store.latents_dtype(dtype))
        motion = None
        if settings.auto_num_view:
            scores = [motion_score(np.stack([small[i], small[i + 1]])) for i in sorted(small) if i + 1 in small]
            motion = float(np.median(scores)) if scores else 0.0
        writer.submit(partial(store.checkpoint, "encode", frames=seen, complete=True, row_shape=row_shape,
                              input_size=list(input_size), size=list(size), motion=motion))
    return torch.from_numpy(log[:]).to(dtype), input_size, size, motion


def _small(frame: np.ndarray) -> np.ndarray:
    """A copy at most 256 pixels on the longer edge, for the motion score."""
    import cv2

    h, w = frame.shape[:2]
    f = min(1.0, 256 / max(h, w))
    return cv2.resize(np.asarray(frame), (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)


# -------------------------------------------------------------------------------- 2. snippets
@dataclass
class _Snippets:
    """What the snippet pass leaves: per dilation, the decoded maps or the latents (flat
    snippet-frame rows), the subsampled maps ``[S, n, P]``, and the global minimum."""

    sources: list
    decoded: bool  # sources hold decoded maps (else latents to decode again)
    subsampled: list | None
    min_value: float
    batch_sizes: list[int]
    decode_seconds: float


def _flat(array):
    """``[S, n, H, W]`` as snippet-frame rows ``[S*n, H, W]`` (an NpyFile already is)."""
    return array.reshape(-1, *array.shape[-2:]) if isinstance(array, np.ndarray) else array


def snippet_pass(pipe: "RollingDepthPipeline", rgb_latents: torch.Tensor, noise: torch.Tensor,
                 plan: list[tuple[int, int]], size, settings: MethodSettings, store, notify: ProgressCallback,
                 keep_maps: bool) -> _Snippets:
    """Every snippet of every dilation through the UNet; each snippet frame decoded once.

    VAE batches are ``max_vae_bs`` snippet frames in order, across UNet batches. Host copies
    and writes run in a background thread (no device sync in the loop). A checkpoint follows
    every UNet batch after which no decoded frame waits for its VAE batch, so that a resumed
    run forms the same batches (and gets the same numbers).
    """
    device, dtype = pipe.unet.device, pipe.unet.dtype
    num_frames, latent_hw = rgb_latents.shape[0], tuple(rgb_latents.shape[-2:])
    pipe.scheduler.set_timesteps(1)  # on the host: the scheduler's step then never syncs
    timestep = pipe.scheduler.timesteps[0]
    pixels = subsample(torch.empty(1, *size)).shape[-1]
    state = store.resumed("snippets") or {}
    groups = state.get("groups", [])  # per dilation done so far: {"snippets": S done, "min": minimum}
    batch_sizes = state.get("batch_sizes") or [
        settings.unet_batch_size or pipe.default_unet_batch_size(n, latent_hw) for _, n in plan]
    clock = _Clock(device)
    sources, subsampled = [], []
    with HostWriter() as writer:
        for g, (d, n) in enumerate(plan):
            idx = snippet_indices(num_frames, n, d)  # [S, n]
            if keep_maps:
                target = store.array(f"snippets_{g}", (len(idx), n, *size), store.maps_dtype(dtype), row_ndim=2)
            else:
                target = store.array(f"latents_{g}", (idx.size, 4, *latent_hw), store.latents_dtype(dtype))
            sub = store.array(f"subsampled_{g}", (idx.size, pixels), np.float32)  # [S*n, P]
            sources.append(target)
            subsampled.append(sub)
            if state.get("complete"):
                continue
            if g == len(groups):
                groups.append({"snippets": 0, "min": float("inf")})

            def record(done_snippets: int, group_min: np.ndarray, g=g):
                groups[g] = {"snippets": done_snippets, "min": float(group_min)}
                store.checkpoint("snippets", groups=groups[: g + 1], batch_sizes=batch_sizes, keep_maps=keep_maps)

            _snippet_group(pipe, rgb_latents, noise, timestep, idx, d, batch_sizes[g], size, settings.max_vae_bs,
                           _flat(target), keep_maps, sub, groups[g], store, writer, clock, notify, record)
        if not state.get("complete"):
            writer.submit(lambda: store.checkpoint("snippets", groups=groups, batch_sizes=batch_sizes,
                                                   keep_maps=keep_maps, complete=True))
        writer.drain()
    min_value = min(group["min"] for group in groups)
    return _Snippets(sources, keep_maps, subsampled, float(min_value), batch_sizes, clock.total())


def _snippet_group(pipe: "RollingDepthPipeline", rgb_latents, noise, timestep, idx: np.ndarray, dilation: int,
                   batch_size: int, size, max_vae_bs: int, target, keep_maps: bool, sub, resumed: dict, store,
                   writer: HostWriter, clock: "_Clock", notify: ProgressCallback, record: Callable) -> None:
    """The snippets ``idx [S, n]`` of one dilation, from ``resumed["snippets"]`` on; ``record(done,
    min)`` is called in the writer thread at each checkpoint."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    n = idx.shape[1]
    keep_dtype = torch.float16 if getattr(target, "dtype", None) == np.float16 else torch.float32
    group_min = torch.full((), resumed["min"], device=device)
    first = resumed["snippets"]
    pending = None  # depth latents waiting for a full VAE batch [k, 4, h, w]
    done = first * n  # snippet frames decoded so far (flat order)
    notify(f"snippets d={dilation}", first, len(idx))  # the stage starts (from where a resumed run left it)
    for start in range(first, len(idx), batch_size):
        frame_ids = torch.from_numpy(idx[start : start + batch_size].reshape(-1))  # [b*n]
        rgb = to_device(rgb_latents[frame_ids], device)
        pred = pipe.denoise_snippets(rgb, noise.expand(len(frame_ids), -1, -1, -1), timestep, n)  # [b*n, 4, h, w]
        if not keep_maps:
            rows = slice(start * n, start * n + len(pred))
            writer.put(partial(store.write, target, rows), pred.float() if dtype == torch.bfloat16 else pred)
        pending = pred if pending is None else torch.cat([pending, pred])
        last = start + batch_size >= len(idx)
        while pending is not None and (len(pending) >= max_vae_bs or last):
            part, pending = pending[:max_vae_bs], (pending[max_vae_bs:] if len(pending) > max_vae_bs else None)
            tick = clock.start()
            maps = pipe.decode_depth(part, size).float()  # [b, H, W]
            clock.stop(tick)
            group_min = torch.minimum(group_min, maps.min())
            rows = slice(done, done + len(part))
            writer.put(partial(store.write, sub, rows), subsample(maps))
            if keep_maps:
                writer.put(partial(store.write, target, rows), maps.to(keep_dtype))
            done += len(part)
        if pending is None:  # every snippet so far is decoded: a point to resume from
            writer.put(partial(record, min(start + batch_size, len(idx))), group_min)
        notify(f"snippets d={dilation}", min(start + batch_size, len(idx)), len(idx))


# ------------------------------------------------------------------------------- 3. coalign
def coalign_pass(pipe: "RollingDepthPipeline", snippets: _Snippets, plan, num_frames: int, settings: MethodSettings,
                 store, notify: ProgressCallback):
    """Scales and shifts (one array of S per dilation), the loss and the iterations run.

    The subsampled maps are shifted in place (no second copy). On the accelerator while the
    problem fits a fixed budget, so that its memory stays bounded; on the host beyond.
    """
    notify("coalign", 0, 1)
    done = store.resumed("coalign")
    if done:
        notify("coalign", 1, 1)
        return ([np.asarray(s, np.float32) for s in done["scales"]], [np.asarray(t, np.float32) for t in done["shifts"]],
                done["loss"], done["iterations"])
    device = pipe.unet.device
    subsampled = [np.asarray(sub[:], np.float32).reshape(-1, n, sub.shape[-1])  # [S, n, P]
                  for sub, (_, n) in zip(snippets.subsampled, plan)]
    snippets.subsampled = None
    problem_bytes = sum(x.nbytes for x in subsampled) * 3  # x, plus targets and temporaries
    coalign_device = device if problem_bytes <= COALIGN_DEVICE_BYTES else torch.device("cpu")
    problem = problem_from_subsampled(subsampled, [d for d, _ in plan], num_frames, snippets.min_value,
                                      coalign_device, inplace=True)
    del subsampled
    scales, shifts, loss, iterations = solve(problem, settings.coalign)
    del problem
    store.checkpoint("coalign", scales=[s.tolist() for s in scales], shifts=[t.tolist() for t in shifts],
                     loss=float(loss), iterations=iterations)
    notify("coalign", 1, 1)
    return scales, shifts, float(loss), iterations


class _Clock:
    """Time spent in a repeated step: CUDA events on CUDA (read once at the end, no sync in
    between), wall time elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds, self.events = 0.0, []

    def start(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, start) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((start, end))
        else:
            self.seconds += time.perf_counter() - start

    def total(self) -> float:
        if self.events:
            self.events[-1][1].synchronize()
            self.seconds += sum(a.elapsed_time(b) for a, b in self.events) / 1000
            self.events = []
        return self.seconds


# ----------------------------------------------------------------------------------- 4. merge
def merge_pass(pipe: "RollingDepthPipeline", plan, sources: list, decoded: bool, scales, shifts, min_value: float,
               size, max_vae_bs: int, out, store, notify: ProgressCallback) -> None:
    """``out[f]`` = mean of ``s*(x - min) + t`` over the snippet frames showing frame ``f``.

    Window by window (:data:`MERGE_WINDOW` frames), a checkpoint after each. ``sources`` are
    per dilation the decoded maps (``decoded``) or the latents, to decode again in VAE
    batches. Rows are read ahead in a background thread, at most a few chunks of 32 at a
    time (not whole windows: a window's maps are 288 frames at 768 x 432 with three
    dilations), and the merged frames written in another.
    """
    from rollingdepth.runtime.stores import read_rows

    device, dtype = pipe.unet.device, pipe.unet.dtype
    num_frames = len(out)
    order, frames_of = [], []
    for d, n in plan:
        flat = snippet_indices(num_frames, n, d).reshape(-1)  # frame of each snippet frame
        o = np.argsort(flat, kind="stable")
        order.append(o)
        frames_of.append(flat[o])
    s_all = [torch.from_numpy(np.asarray(s, np.float32)).to(device) for s in scales]
    t_all = [torch.from_numpy(np.asarray(t, np.float32)).to(device) for t in shifts]
    chunk = max_vae_bs if not decoded else MERGE_WINDOW  # rows read (and held) at a time
    first = (store.resumed("merge") or {}).get("windows", 0)

    def batches():
        """Window by window: (f0, f1, group, flat rows s*n + j, frame in window, maps or
        latents), then (f0, f1, None, ...) once the window is complete."""
        for f0 in range(first * MERGE_WINDOW, num_frames, MERGE_WINDOW):
            f1 = min(num_frames, f0 + MERGE_WINDOW)
            for g, (src, o, fr) in enumerate(zip(sources, order, frames_of)):
                lo, hi = np.searchsorted(fr, f0, "left"), np.searchsorted(fr, f1, "left")
                for start in range(lo, hi, chunk):
                    part = o[start : min(hi, start + chunk)]
                    yield f0, f1, g, part, fr[start : start + len(part)] - f0, read_rows(_flat(src), part)
            yield f0, f1, None, None, None, None

    acc = count = None
    notify("merge", min(first * MERGE_WINDOW, num_frames), num_frames)
    with HostWriter(depth=1) as writer:  # a window is 32 full-size frames: keep few of them around
        for f0, f1, g, part, local, data in prefetch(batches(), depth=2):
            if acc is None:
                acc = torch.zeros((f1 - f0, *size), dtype=torch.float32, device=device)
                count = torch.zeros(f1 - f0, dtype=torch.float32, device=device)
            if g is None:  # the window is complete
                writer.put(partial(store.write, out, slice(f0, f1)), acc / count[:, None, None], copy=False)  # fresh
                writer.submit(partial(store.checkpoint, "merge", windows=-(-f1 // MERGE_WINDOW)))
                notify("merge", f1, num_frames)
                acc = count = None
                continue
            n = plan[g][1]
            if decoded:
                maps = to_device(torch.from_numpy(data), device).float()  # [b, H, W]
            else:
                z = to_device(torch.from_numpy(np.asarray(data, np.float32)), device, dtype)
                maps = pipe.decode_depth(z, size).float()  # [b, H, W]
            snip = to_device(torch.from_numpy(part // n), device)
            local = to_device(torch.from_numpy(local), device)
            values = (maps - min_value) * s_all[g][snip][:, None, None] + t_all[g][snip][:, None, None]
            acc.index_add_(0, local, values)
            count.index_add_(0, local, torch.ones(len(part), device=device))


# ----------------------------------------------------------------------------- 5. renormalise
def renormalise(source, target, store, chunk: int = MERGE_WINDOW) -> tuple[float, float]:
    """``target = (source - min) / (max - min) * 2 - 1`` over the whole video (constant -> 0),
    chunk by chunk. Returns the min and max of ``source``."""
    done = store.resumed("renormalise")
    if done:
        return done["lo"], done["hi"]
    lo, hi = float("inf"), float("-inf")
    for i in range(0, len(source), chunk):
        part = source[i : i + chunk]
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    for i in range(0, len(source), chunk):
        part = source[i : i + chunk]
        store.write(target, slice(i, i + len(part)), np.zeros_like(part) if hi <= lo else (part - lo) / (hi - lo) * 2.0 - 1.0)
    store.checkpoint("renormalise", lo=lo, hi=hi)
    return lo, hi


# ---------------------------------------------------------------------------------- 6. refine
def refine_pass(pipe: "RollingDepthPipeline", rgb_latents: torch.Tensor, noise: torch.Tensor, coaligned,
                schedule: list[int], snippet_len: int, size, settings: MethodSettings, out, store,
                notify: ProgressCallback) -> tuple[float, float]:
    """Coarse-to-fine refinement of the co-aligned depth, decoded into ``out``; returns its range.

    Every ``[N, ...]`` tensor stays on the host (the frame latents, the current depth latents
    and one accumulator); only batches visit the device. Accumulation and output writes run
    in a background thread. A resumable store keeps the latents after every step and the
    decoded output batch by batch.
    """
    device, dtype = pipe.unet.device, pipe.unet.dtype
    num_frames, max_vae_bs, refine_step = rgb_latents.shape[0], settings.max_vae_bs, settings.refine_step
    pipe.scheduler.set_timesteps(2 * refine_step)  # on the host
    timesteps = pipe.scheduler.timesteps[refine_step:]
    first = (store.resumed("refine") or {}).get("steps", 0)
    if first:
        latents = torch.from_numpy(np.asarray(store.array(f"refine_{first - 1}", (num_frames, *rgb_latents.shape[1:]),
                                                          store.latents_dtype(dtype))[:])).to(dtype)
    else:
        latents = _encode_depth(pipe, coaligned, max_vae_bs, timesteps[:1], noise)  # [N, 4, h, w] host
    bs = settings.unet_batch_size or pipe.default_unet_batch_size(snippet_len, tuple(latents.shape[-2:]))
    notify("refine", first, refine_step)
    for i in range(first, refine_step):
        t, dilation = timesteps[i], schedule[i]
        idx = torch.from_numpy(snippet_indices(num_frames, snippet_len, dilation))
        acc = torch.zeros(latents.shape, dtype=torch.float32)
        count = torch.zeros(num_frames, dtype=torch.float32)
        with HostWriter() as writer:
            for start in range(0, idx.shape[0], bs):
                frame_ids = idx[start : start + bs].reshape(-1)
                pred = pipe.denoise_snippets(to_device(rgb_latents[frame_ids], device),
                                             to_device(latents[frame_ids], device), t, snippet_len)
                writer.put(partial(_accumulate, acc, count, frame_ids), pred.float(), as_numpy=False)
        latents = acc.div_(count[:, None, None, None]).to(dtype)  # no copy in fp32
        del acc
        if getattr(store, "resumable", False):
            saved = store.array(f"refine_{i}", tuple(latents.shape), store.latents_dtype(dtype))
            store.write(saved, slice(0, num_frames), latents.float().numpy() if dtype == torch.bfloat16 else latents.numpy())
            store.checkpoint("refine", steps=i + 1)
        notify("refine", i + 1, refine_step)
    return _decode_output(pipe, latents, size, max_vae_bs, out, store, notify)


def _encode_depth(pipe: "RollingDepthPipeline", depth, max_vae_bs: int, timestep, noise) -> torch.Tensor:
    """The co-aligned depth encoded like RGB and noised to ``timestep`` with the initial noise:
    the refinement's first latents ``[N, 4, h, w]`` (host)."""
    device = pipe.unet.device
    parts = []
    with HostWriter() as writer:  # latents reach the host without the device waiting
        for start in range(0, len(depth), max_vae_bs):
            d = to_device(torch.from_numpy(np.asarray(depth[start : start + max_vae_bs], np.float32)), device)
            writer.put(parts.append, pipe.encode_depth(d), as_numpy=False, copy=False)  # fresh
    latents = torch.cat(parts)
    del parts
    noise_host = noise.cpu()
    for start in range(0, len(latents), 256):  # in place, chunk by chunk (element-wise)
        part = latents[start : start + 256]
        part.copy_(pipe.scheduler.add_noise(part, noise_host.expand(len(part), -1, -1, -1), timestep))
    return latents


def _decode_output(pipe: "RollingDepthPipeline", latents: torch.Tensor, size, max_vae_bs: int, out, store,
                   notify: ProgressCallback) -> tuple[float, float]:
    """Decode the refined latents into ``out`` batch by batch (a checkpoint after each); its range."""
    device = pipe.unet.device
    num_frames = len(latents)
    done = store.resumed("refine_decode") or {}
    seen = {"lo": done.get("lo", float("inf")), "hi": done.get("hi", float("-inf"))}

    def write(rows: slice, maps: np.ndarray) -> None:
        store.write(out, rows, maps)
        seen["lo"], seen["hi"] = min(seen["lo"], float(maps.min())), max(seen["hi"], float(maps.max()))
        store.checkpoint("refine_decode", frames=rows.stop, **seen)

    notify("refine decode", done.get("frames", 0), num_frames)
    with HostWriter() as writer:
        for start in range(done.get("frames", 0), num_frames, max_vae_bs):
            maps = pipe.decode_depth(to_device(latents[start : start + max_vae_bs], device), size).float()
            writer.put(partial(write, slice(start, start + len(maps))), maps)
            notify("refine decode", min(start + max_vae_bs, num_frames), num_frames)
    return seen["lo"], seen["hi"]


def _accumulate(acc: torch.Tensor, count: torch.Tensor, frame_ids: torch.Tensor, pred: torch.Tensor) -> None:
    acc.index_add_(0, frame_ids, pred)
    count.index_add_(0, frame_ids, torch.ones(len(frame_ids)))
