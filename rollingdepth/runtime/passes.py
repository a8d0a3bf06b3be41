"""The method, once: RollingDepth's passes over a store of intermediate results.

:class:`VideoRun` is what ``RollingDepthPipeline.__call__`` (over a
:class:`~rollingdepth.runtime.stores.MemoryStore`) and ``run-video`` (over a
:class:`~rollingdepth.runtime.stores.DiskStore`) both run, through :func:`run`. Its passes:

1. :meth:`VideoRun.encode`: frames stream in (any iterable of uint8 ``[H, W, 3]``), are resized,
   normalised and VAE-encoded in batches; their latents stay on the host.
2. :meth:`VideoRun.snippets`: every snippet of the :class:`~rollingdepth.runtime.plan.Plan`
   goes through the UNet in batches, and each snippet frame is decoded once, right away: its
   map goes to the store (or, without room for the maps, only its latent), every 10th pixel
   stays in memory for co-alignment.
3. :meth:`VideoRun.coalign`: one scale and shift per snippet from the subsampled maps
   (:func:`rollingdepth.method.coalign.solve`).
4. :meth:`VideoRun.merge`: window by window, each frame is the mean of ``s*(x - min) + t`` over
   the snippet frames that show it (:class:`rollingdepth.method.coalign.SnippetMerge`, as
   :func:`~rollingdepth.method.coalign.merge_snippets` merges snippets in memory).
5. :func:`renormalise`: the merged video to [-1, 1], chunk by chunk.
6. :meth:`VideoRun.refine` (optional): coarse-to-fine refinement, decoded into the output.

Each pass checkpoints a typed state (:mod:`rollingdepth.runtime.checkpoints`) and a resumed run
starts each pass from its last one. With the disk store, host memory grows by well under
0.5 MB per frame at 768 x 432 and accelerator memory does not grow with the video at all
(co-alignment moves to the host beyond a fixed budget). Device-to-host copies and file writes
run in background threads (:class:`~rollingdepth.runtime.background.HostWriter`), so the
accelerator does not wait for them.
"""

from __future__ import annotations

import time
import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from rollingdepth.errors import EmptyVideoError
from rollingdepth.method.coalign import SnippetMerge, problem_from_subsampled, solve, subsample
from rollingdepth.method.device import flush_denormals, to_device
from rollingdepth.method.num_view import choose_num_view, motion_score
from rollingdepth.method.settings import MethodSettings, method_fields
from rollingdepth.runtime.background import HostWriter, prefetch
from rollingdepth.runtime.checkpoints import (CoalignState, EncodeState, GroupProgress, MergeState, RefineDecodeState,
                                              RefineState, RenormaliseState, SnippetsState)
from rollingdepth.runtime.heap import heap_reuse
from rollingdepth.runtime.model_steps import DepthModel, ModelSteps, WorkCounts
from rollingdepth.runtime.plan import Plan, SnippetGroup
from rollingdepth.runtime.reports import ShotReport, UnitPlace
from rollingdepth.runtime.stages import ProgressCallback, Stage
from rollingdepth.runtime.stores import Store, read_rows

__all__ = ["MERGE_WINDOW", "ProgressCallback", "RunResult", "VideoRun", "renormalise", "run"]

MERGE_WINDOW = 32  # frames merged (and re-normalised) at a time
# Co-alignment runs on the accelerator only while its problem (about 3x the subsampled maps)
# fits in this many bytes; longer videos co-align on the host, so that accelerator memory has
# a ceiling that does not depend on the video's length.
COALIGN_DEVICE_BYTES = 1 << 30
MOTION_PAIRS = 16  # frame pairs sampled for the automatic snippet length


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
    settings: dict  # the values actually used (after capping), as run.json reports them; code reads ``plan``
    timings: dict = field(default_factory=dict)  # seconds per stage
    counts: WorkCounts = field(default_factory=WorkCounts)  # VAE encodes and decodes (frames), UNet calls and frames
    num_view_auto: dict | None = None  # the automatic snippet length's choice and reasons, when "auto"
    shots: list[ShotReport] | None = None  # per shot its report, when the video ran as several units (runtime.units)
    units: list[UnitPlace] | None = None  # per unit: where it is, its seconds (and rank, when spread over ranks)
    plan: Plan | None = None  # the snippet groups and refinement it ran (None: several units, each its own)


@dataclass
class Encoded:
    """The encode pass's result."""

    latents: torch.Tensor  # [N, 4, h, w] on the host
    input_size: tuple[int, int]
    size: tuple[int, int]  # processing size (H, W)
    motion: float | None  # the motion score, for the automatic snippet length

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[0])

    @property
    def latent_hw(self) -> tuple[int, int]:
        return tuple(self.latents.shape[-2:])


@dataclass
class Snippets:
    """What the snippet pass leaves: per group, the decoded maps or the latents (flat
    snippet-frame rows), the subsampled maps ``[S*n, P]``, and the global minimum."""

    sources: list
    decoded: bool  # sources hold decoded maps (else latents to decode again)
    subsampled: list | None
    min_value: float
    batch_sizes: list[int]
    decode_seconds: float


@dataclass
class Alignment:
    """Co-alignment's result: per group, one scale and shift per snippet."""

    scales: list[np.ndarray]
    shifts: list[np.ndarray]
    loss: float
    iterations: int


@dataclass
class _GroupJob:
    """One snippet group in the snippet pass: where its maps (or latents) and subsampled maps
    go, and how far a resumed run had come."""

    index: int
    group: SnippetGroup
    batch_size: int
    target: Any  # flat rows [S*n, H, W] (maps) or [S*n, 4, h, w] (latents)
    sub: Any  # [S*n, P]
    progress: GroupProgress


def _silent(stage: Stage, done: int, total: int) -> None:
    pass


# latent rows and columns the method needs at least (its subsampled co-alignment: 2 failed); the real
# model's SD2 layout runs from there (24 px frames, checked with random weights: benchmarks/check_min_size.py)
MIN_LATENT = 3


def _check_size(input_size: tuple[int, int], size: tuple[int, int], processing_res: int, vae_factor: int) -> None:
    """One ``ValueError`` naming the resolution when frames become too small for the model."""
    from rollingdepth.runtime.run_config import option_name

    least = MIN_LATENT * vae_factor
    if min(size) < least:
        (h, w), (ph, pw) = input_size, size
        need = -(-least * max(h, w) // min(h, w))
        raise ValueError(f"{option_name('processing_res')} {processing_res} makes the {w}x{h} frames {pw}x{ph} pixels; "
                         f"this model needs at least {least} on the shorter side: give {option_name('processing_res')} "
                         f"{need} or more")


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _flat(array):
    """``[S, n, H, W]`` as snippet-frame rows ``[S*n, H, W]`` (an NpyFile already is)."""
    return array.reshape(-1, *array.shape[-2:]) if isinstance(array, np.ndarray) else array


def _small(frame: np.ndarray) -> np.ndarray:
    """A copy at most 256 pixels on the longer edge, for the motion score."""
    import cv2

    h, w = frame.shape[:2]
    f = min(1.0, 256 / max(h, w))
    return cv2.resize(np.asarray(frame), (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)


def _host(x: torch.Tensor) -> torch.Tensor:
    """What the host keeps of a latent: bf16 as float32 (NumPy has no bf16)."""
    return x.float() if x.dtype == torch.bfloat16 else x


def run(
    pipe: DepthModel,
    frames: Iterable[np.ndarray],
    store: Store,
    settings: MethodSettings,
    *,
    generator: torch.Generator | None = None,
    callback: ProgressCallback | None = None,
    num_frames_hint: int | None = None,
    keep_snippets: bool = False,
) -> RunResult:
    """Predict depth for a stream of uint8 RGB frames ``[H, W, 3]`` into ``store``: :class:`VideoRun`."""
    return VideoRun(pipe, store, settings, generator=generator, callback=callback, num_frames_hint=num_frames_hint,
                    keep_snippets=keep_snippets).run(frames)


class VideoRun:
    """One run of the method over a store: the passes as methods, each starting from its last
    checkpoint in the store.

    ``settings`` must be validated (:meth:`MethodSettings.validate`). ``num_frames_hint``
    (the expected frame count) lets a dilation that cannot fit fail before any work and
    spreads the motion samples of ``snippet_lengths="auto"``. ``keep_snippets``: the decoded
    snippet maps are an output, so they are kept whatever the store's budget.
    """

    def __init__(self, pipe: DepthModel, store: Store, settings: MethodSettings, *,
                 generator: torch.Generator | None = None, callback: ProgressCallback | None = None,
                 num_frames_hint: int | None = None, keep_snippets: bool = False):
        self.pipe, self.store, self.settings = pipe, store, settings
        self.model = ModelSteps(pipe, settings.attn_span)  # counts, attention span, out-of-memory back-off
        self.generator, self.notify = generator, callback or _silent
        self.num_frames_hint, self.keep_snippets = num_frames_hint, keep_snippets
        self.timings: dict[str, float] = {}
        self.num_view_auto: dict | None = None

    def _timed(self, stage: str, fn: Callable, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0

    def run(self, frames: Iterable[np.ndarray]) -> RunResult:
        """Predict depth for a stream of uint8 RGB frames ``[H, W, 3]`` into the store."""
        return self.predict(self.encode_video(frames))

    @torch.no_grad()
    def encode_video(self, frames: Iterable[np.ndarray]) -> Encoded:
        """The run's first step: every frame encoded once, as the frames stream in (a resumed run
        reads what was encoded). A caller may look at what went by before :meth:`predict`."""
        self.pipe.prepare()
        if not self.settings.auto_num_view and self.num_frames_hint:  # a dilation that cannot fit fails before any work
            Plan.build(self.settings, self.num_frames_hint)

        # 1. Encode every frame once
        return self._timed("encode", self.encode, frames)

    @torch.no_grad()
    def predict(self, encoded: Encoded) -> RunResult:
        """The rest of the run, from the frames' latents: the depth in the store's output."""
        store = self.store
        num_frames, size = encoded.num_frames, encoded.size

        # 2. The plan (the snippet length chosen here when "auto"), one initial noise for every frame
        plan = self.plan(encoded)
        noise = self.model.initial_noise((1, 4, *encoded.latent_hw), self.generator)  # [1, 4, h, w]
        self.pipe.empty_text_embedding()

        # 3. Snippets through the UNet, each snippet frame decoded once
        snippets = self._timed("snippets", self.snippets, encoded, plan, noise)
        self.timings["snippets"] -= snippets.decode_seconds
        self.timings["decode"] = snippets.decode_seconds

        # 4. Co-align on the subsampled maps
        alignment = self._timed("coalign", self.coalign, snippets, plan)

        # 5. Merge window by window, re-normalise to [-1, 1]
        t0 = time.perf_counter()
        refining = plan.refine is not None
        if not refining:
            encoded.latents = None  # only refinement needs the frame latents again
        merged = store.array("merged", (num_frames, *size))
        bounds = self.merge(plan, snippets, alignment, size, merged)
        coaligned = store.array("coaligned", (num_frames, *size)) if refining else store.output((num_frames, *size))
        lo, hi = renormalise(merged, coaligned, store, bounds=bounds)
        self.timings["merge"] = time.perf_counter() - t0

        # 6. Optional coarse-to-fine refinement
        depth, depth_range = coaligned, ((-1.0, 1.0) if hi > lo else (0.0, 0.0))
        if refining:
            depth = store.output((num_frames, *size))
            depth_range = self._timed("refine", self.refine, encoded, noise, coaligned, plan, depth)

        return RunResult(
            num_frames=num_frames, input_size=tuple(encoded.input_size), size=tuple(size), depth=depth,
            depth_coaligned=coaligned, snippets=snippets.sources if snippets.decoded else [None] * len(plan.groups),
            coalign_loss=float(alignment.loss), depth_range=depth_range,
            settings=self._report(encoded, plan, snippets, alignment), timings=self.timings,
            counts=dataclasses.replace(self.model.counts), num_view_auto=self.num_view_auto, plan=plan,
        )

    def _report(self, encoded: Encoded, plan: Plan, snippets: Snippets, alignment: Alignment) -> dict:
        """The values this run actually used, as reported in ``settings``: every method setting
        (:func:`method_fields`), as planned where planning changed it (capped dilations, the
        snippet lengths chosen), with what the run measured or chose."""
        s = self.settings
        return {
            "num_frames": plan.num_frames,
            "input_size": list(encoded.input_size),
            "processing_size": list(encoded.size),
            **{name: getattr(s, name) for name in method_fields()},
            **plan.report(s),
            "coalign_iterations": alignment.iterations,
            "unet_batch_size": snippets.batch_sizes,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": str(self.model.device),
            "num_view_auto": self.num_view_auto,
            "store": self.store.kind,
            "decoded_maps": "kept" if snippets.decoded else "decoded again",
        }

    # ------------------------------------------------------------------------------ 1. encode
    def encode(self, frames: Iterable[np.ndarray]) -> Encoded:
        """Latents ``[N, 4, h, w]`` (host) of every frame, the input and processing sizes, and
        the motion score (for ``snippet_lengths="auto"``, else None).

        The latents go to the store batch by batch (a checkpoint after each); a resumed run
        skips the frames already encoded, or the whole pass once it was complete.
        """
        store, model, dtype = self.store, self.model, self.model.dtype
        done = store.resumed(EncodeState) or EncodeState()
        if done.complete:
            log = store.rows("frame_latents", done.row_shape, store.latents_dtype(dtype))
            self.notify(Stage("encode"), len(log), len(log))
            return Encoded(torch.from_numpy(log[:]).to(dtype), tuple(done.input_size), tuple(done.size), done.motion)
        hint = self.num_frames_hint
        row_shape = done.row_shape  # [4, h, w]
        log, size, input_size, seen = None, None, None, 0
        motion = _MotionSample(hint) if self.settings.auto_num_view else None
        if hint:
            self.notify(Stage("encode"), 0, hint)
        with HostWriter() as writer:  # latents reach the host (and the disk) without the device waiting
            for batch in _batched(frames, self.settings.max_vae_bs):
                chunk = np.stack(batch)  # [B, H, W, 3] uint8
                if size is None:
                    input_size = tuple(chunk.shape[1:3])
                    size = self.pipe.processing_size(input_size[0], input_size[1], self.settings.processing_res)
                    _check_size(input_size, size, self.settings.processing_res, getattr(self.pipe, "vae_scale_factor", 1))
                elif tuple(chunk.shape[1:3]) != input_size:
                    raise ValueError(f"frames: frame {seen} has size {chunk.shape[1:3]}, the first had {input_size}")
                if motion is not None:
                    motion.add(seen, batch)
                if seen >= done.frames:  # frames encoded before are a multiple of the batch size
                    latents = model.encode_frames(chunk, size)  # [B, 4, h, w]
                    if log is None:
                        row_shape = list(latents.shape[1:])
                        log = store.rows("frame_latents", row_shape, store.latents_dtype(dtype))
                    writer.put(partial(store.append, log), _host(latents))
                    writer.submit(partial(store.checkpoint, EncodeState(frames=seen + len(batch), row_shape=row_shape)))
                seen += len(batch)
                self.notify(Stage("encode"), seen, max(seen, hint or 0))
            if seen == 0:
                raise EmptyVideoError("frames: the video has no frames")
            if log is None:  # every frame was encoded before
                log = store.rows("frame_latents", row_shape, store.latents_dtype(dtype))
            score = motion.score() if motion is not None else None
            writer.submit(partial(store.checkpoint, EncodeState(frames=seen, row_shape=row_shape, complete=True,
                                                                input_size=list(input_size), size=list(size),
                                                                motion=score)))
        return Encoded(torch.from_numpy(log[:]).to(dtype), input_size, size, score)

    # -------------------------------------------------------------------------------- 2. plan
    def plan(self, encoded: Encoded) -> Plan:
        """The run's :class:`Plan`; with ``snippet_lengths="auto"`` the snippet length is chosen
        here, from the motion score and the free memory (:attr:`num_view_auto` says why)."""
        snippet_len = None
        if self.settings.auto_num_view:
            snippet_len, self.num_view_auto = choose_num_view(
                None, self.model.device, encoded.latent_hw, self.model.dtype, motion=encoded.motion,
                num_frames=encoded.num_frames)
        return Plan.build(self.settings, encoded.num_frames, snippet_len)

    # ---------------------------------------------------------------------------- 3. snippets
    def snippets(self, encoded: Encoded, plan: Plan, noise: torch.Tensor) -> Snippets:
        """Every snippet of every group through the UNet; each snippet frame decoded once.

        VAE batches are ``max_vae_bs`` snippet frames in order, across UNet batches. Host copies
        and writes run in a background thread (no device sync in the loop). A checkpoint follows
        every UNet batch after which no decoded frame waits for its VAE batch, so that a resumed
        run forms the same batches (and gets the same numbers).
        """
        store, model, size = self.store, self.model, encoded.size
        timestep = model.timesteps(1)[0]  # on the host: the scheduler's step then never syncs
        pixels = subsample(torch.empty(1, *size)).shape[-1]
        map_bytes = self._expect_bytes(plan, size)
        state = store.resumed(SnippetsState)
        if state is None:
            keep = self.keep_snippets or store.keep_maps(map_bytes, store.expected_bytes - map_bytes)
            state = SnippetsState(keep_maps=keep)
        state.batch_sizes = state.batch_sizes or [
            self.settings.unet_batch_size or model.default_unet_batch_size(g.snippet_len, encoded.latent_hw)
            for g in plan.groups]
        clock = _Clock(model.device)
        sources, subsampled = [], []
        with HostWriter() as writer:
            for g, group in enumerate(plan.groups):
                target, sub = self._group_arrays(g, group, state.keep_maps, encoded, pixels)
                sources.append(target)
                subsampled.append(sub)
                if state.complete:
                    continue
                if g == len(state.groups):
                    state.groups.append(GroupProgress())
                job = _GroupJob(g, group, state.batch_sizes[g], _flat(target), sub, state.groups[g])
                self._snippet_group(job, state, encoded, noise, timestep, writer, clock)
            if not state.complete:
                writer.submit(lambda: store.checkpoint(SnippetsState(list(state.groups), state.batch_sizes,
                                                                     state.keep_maps, complete=True)))
            writer.drain()
        min_value = min(group.min for group in state.groups)
        return Snippets(sources, state.keep_maps, subsampled, float(min_value), state.batch_sizes, clock.total())

    def _expect_bytes(self, plan: Plan, size: tuple[int, int]) -> int:
        """Bytes of the decoded snippet maps; the store learns all the run will write."""
        map_bytes = plan.snippet_frames * size[0] * size[1] * np.dtype(self.store.maps_dtype(self.model.dtype)).itemsize
        output_bytes = plan.num_frames * size[0] * size[1] * 4 * (3 if plan.refine else 2)  # merged, output (coaligned)
        self.store.expected_bytes = map_bytes + output_bytes
        return map_bytes

    def _group_arrays(self, g: int, group: SnippetGroup, keep_maps: bool, encoded: Encoded, pixels: int):
        """The store's arrays of group ``g``: its maps ``[S, n, H, W]`` (or latents ``[S*n, 4, h, w]``)
        and its subsampled maps ``[S*n, P]``."""
        store, dtype = self.store, self.model.dtype
        if keep_maps:
            target = store.array(f"snippets_{g}", (group.count, group.snippet_len, *encoded.size),
                                 store.maps_dtype(dtype), row_ndim=2)
        else:
            target = store.array(f"latents_{g}", (group.frames, 4, *encoded.latent_hw), store.latents_dtype(dtype))
        return target, store.array(f"subsampled_{g}", (group.frames, pixels), np.float32)

    def _record(self, state: SnippetsState, g: int, done_snippets: int, group_min: np.ndarray) -> None:
        """A checkpoint of the snippet pass (in the writer thread, after the rows it vouches for)."""
        state.groups[g] = GroupProgress(done_snippets, float(group_min))
        self.store.checkpoint(SnippetsState(state.groups[: g + 1], state.batch_sizes, state.keep_maps))

    def _snippet_group(self, job: _GroupJob, state: SnippetsState, encoded: Encoded, noise: torch.Tensor,
                       timestep: torch.Tensor, writer: HostWriter, clock: "_Clock") -> None:
        """The snippets of one group, from ``job.progress.snippets`` on."""
        model, store, size, max_vae_bs = self.model, self.store, encoded.size, self.settings.max_vae_bs
        idx, snippet_len, batch_size = job.group.indices, job.group.snippet_len, job.batch_size  # idx [S, n]
        keep_dtype = torch.float16 if getattr(job.target, "dtype", None) == np.float16 else torch.float32
        group_min = torch.full((), job.progress.min, device=model.device)
        first = job.progress.snippets
        pending = None  # depth latents waiting for a full VAE batch [k, 4, h, w]
        done = first * snippet_len  # snippet frames decoded so far (flat order)
        stage = Stage("snippets", dilation=job.group.dilation)
        self.notify(stage, first, len(idx))  # the stage starts (from where a resumed run left it)
        for start in range(first, len(idx), batch_size):
            frame_ids = torch.from_numpy(idx[start : start + batch_size].reshape(-1))  # [b*n]
            rgb = to_device(encoded.latents[frame_ids], model.device)
            pred = model.denoise_snippets(rgb, noise.expand(len(frame_ids), -1, -1, -1), timestep, snippet_len)
            if not state.keep_maps:
                writer.put(partial(store.write, job.target, slice(start * snippet_len, start * snippet_len + len(pred))), _host(pred))
            pending = pred if pending is None else torch.cat([pending, pred])
            last = start + batch_size >= len(idx)
            while pending is not None and (len(pending) >= max_vae_bs or last):
                part, pending = pending[:max_vae_bs], (pending[max_vae_bs:] if len(pending) > max_vae_bs else None)
                tick = clock.start()
                maps = model.decode_depth(part, size).float()  # [b, H, W]
                clock.stop(tick)
                group_min = torch.minimum(group_min, maps.min())
                rows = slice(done, done + len(part))
                writer.put(partial(store.write, job.sub, rows), subsample(maps), copy=False)  # a fresh copy
                if state.keep_maps:  # maps is not touched again: no copy on the host
                    writer.put(partial(store.write, job.target, rows), maps.to(keep_dtype), copy=False)
                done += len(part)
            if pending is None:  # every snippet so far is decoded: a point to resume from
                writer.put(partial(self._record, state, job.index, min(start + batch_size, len(idx))), group_min)
            self.notify(stage, min(start + batch_size, len(idx)), len(idx))

    # ----------------------------------------------------------------------------- 4. coalign
    def coalign(self, snippets: Snippets, plan: Plan) -> Alignment:
        """Scales and shifts (one array of S per group), the loss and the iterations run."""
        self.notify(Stage("coalign"), 0, 1)
        done = self.store.resumed(CoalignState)
        if done is None:
            done = self._solve(snippets, plan)
            self.store.checkpoint(done)
        self.notify(Stage("coalign"), 1, 1)
        return Alignment([np.asarray(s, np.float32) for s in done.scales],
                         [np.asarray(t, np.float32) for t in done.shifts], float(done.loss), done.iterations)

    def _solve(self, snippets: Snippets, plan: Plan) -> CoalignState:
        """The co-alignment problem solved. The subsampled maps are shifted in place (no second
        copy). On the accelerator while the problem fits a fixed budget, so that its memory stays
        bounded; on the host beyond."""
        subsampled = [np.asarray(sub[:], np.float32).reshape(-1, g.snippet_len, sub.shape[-1])  # [S, n, P]
                      for sub, g in zip(snippets.subsampled, plan.groups)]
        snippets.subsampled = None
        problem_bytes = sum(x.nbytes for x in subsampled) * 3  # x, plus targets and temporaries
        device = self.model.device if problem_bytes <= COALIGN_DEVICE_BYTES else torch.device("cpu")
        problem = problem_from_subsampled(subsampled, [g.dilation for g in plan.groups], plan.num_frames,
                                          snippets.min_value, device, inplace=True)
        del subsampled
        with heap_reuse():  # under run-video's heap setting: the solve's temporaries reused (runtime.heap)
            scales, shifts, loss, iterations = solve(problem, self.settings.coalign)
        return CoalignState([s.tolist() for s in scales], [t.tolist() for t in shifts], float(loss), iterations)

    # ------------------------------------------------------------------------------- 5. merge
    def merge(self, plan: Plan, snippets: Snippets, alignment: Alignment, size: tuple[int, int], out
              ) -> tuple[float, float] | None:
        """``out[f]`` = mean of ``s*(x - min) + t`` over the snippet frames showing frame ``f``.

        Window by window (:data:`MERGE_WINDOW` frames), a checkpoint after each. Rows are read
        ahead in a background thread, at most a few chunks of 32 at a time (not whole windows: a
        window's maps are 288 frames at 768 x 432 with three dilations), and the merged frames
        written in another. Returns the merged video's minimum and maximum (None when a resumed
        run's journal does not hold those of the windows merged before).
        """
        device, store = self.model.device, self.store
        s_all = [torch.from_numpy(np.asarray(s, np.float32)).to(device) for s in alignment.scales]
        t_all = [torch.from_numpy(np.asarray(t, np.float32)).to(device) for t in alignment.shifts]
        resumed = store.resumed(MergeState) or MergeState(0)
        first = resumed.windows
        known = first == 0 or resumed.lo is not None  # the range of the windows merged before
        lo = torch.tensor(float("inf") if resumed.lo is None else resumed.lo, device=device)
        hi = torch.tensor(float("-inf") if resumed.hi is None else resumed.hi, device=device)
        merge = None  # the window's SnippetMerge
        self.notify(Stage("merge"), min(first * MERGE_WINDOW, plan.num_frames), plan.num_frames)
        # subnormal floats would slow a CPU's arithmetic (docs/performance.md); a window is 32
        # full-size frames: keep few of them around
        with flush_denormals(device.type == "cpu"), HostWriter(depth=1) as writer:
            for f0, f1, g, part, local, data in prefetch(self._merge_reads(plan, snippets, first), depth=2):
                if merge is None:
                    merge = SnippetMerge(f1 - f0, size, snippets.min_value, device)
                if g is None:  # the window is complete
                    merged = merge.means()  # [w, H, W]
                    lo, hi = torch.minimum(lo, merged.min()), torch.maximum(hi, merged.max())  # no sync
                    writer.put(partial(store.write, out, slice(f0, f1)), merged, copy=False)  # fresh
                    writer.put(partial(_merge_checkpoint, store, -(-f1 // MERGE_WINDOW)), lo, hi)
                    self.notify(Stage("merge"), f1, plan.num_frames)
                    merge = None
                    continue
                if snippets.decoded:
                    maps = to_device(torch.from_numpy(data), device).float()  # [b, H, W]
                else:
                    z = to_device(torch.from_numpy(np.asarray(data, np.float32)), device, self.model.dtype)
                    maps = self.model.decode_depth(z, size).float()  # [b, H, W]
                snip = to_device(torch.from_numpy(part // plan.groups[g].snippet_len), device)  # snippet of each row
                local = to_device(torch.from_numpy(local), device)
                # maps is a fresh read [b, H, W]: merged in place
                merge.add(local, maps, s_all[g][snip], t_all[g][snip], inplace=True)
        return (float(lo), float(hi)) if known else None

    def _merge_reads(self, plan: Plan, snippets: Snippets, first: int) -> Iterator[tuple]:
        """Window by window from window ``first``: ``(f0, f1, group, flat rows s*n + j, frame in
        window, maps or latents)``, then ``(f0, f1, None, ...)`` once the window is complete."""
        chunk = self.settings.max_vae_bs if not snippets.decoded else MERGE_WINDOW  # rows read (and held) at a time
        order, frames_of = [], []
        for g in plan.groups:
            flat = g.indices.reshape(-1)  # frame of each snippet frame
            o = np.argsort(flat, kind="stable")
            order.append(o)
            frames_of.append(flat[o])
        for f0 in range(first * MERGE_WINDOW, plan.num_frames, MERGE_WINDOW):
            f1 = min(plan.num_frames, f0 + MERGE_WINDOW)
            for g, (src, o, fr) in enumerate(zip(snippets.sources, order, frames_of)):
                lo, hi = np.searchsorted(fr, f0, "left"), np.searchsorted(fr, f1, "left")
                for start in range(lo, hi, chunk):
                    part = o[start : min(hi, start + chunk)]
                    yield f0, f1, g, part, fr[start : start + len(part)] - f0, read_rows(_flat(src), part)
            yield f0, f1, None, None, None, None

    # ------------------------------------------------------------------------------ 6. refine
    def refine(self, encoded: Encoded, noise: torch.Tensor, coaligned, plan: Plan, out) -> tuple[float, float]:
        """Coarse-to-fine refinement of the co-aligned depth, decoded into ``out``; returns its range.

        Every ``[N, ...]`` tensor stays on the host (the frame latents, the current depth latents
        and one accumulator); only batches visit the device. Accumulation and output writes run
        in a background thread. A resumable store keeps the latents after every step and the
        decoded output batch by batch.
        """
        store, model, refine, num_frames = self.store, self.model, plan.refine, plan.num_frames
        timesteps = model.timesteps(2 * refine.steps)[refine.steps :]  # on the host
        first = (store.resumed(RefineState) or RefineState(0)).steps
        shape = (num_frames, *encoded.latents.shape[1:])
        if first:
            saved = store.array(f"refine_{first - 1}", shape, store.latents_dtype(model.dtype))
            latents = torch.from_numpy(np.asarray(saved[:])).to(model.dtype)
        else:  # the depth's encoding is part of the stage: its batches report 0 steps done
            latents = self._encode_depth(coaligned, timesteps[:1], noise,
                                         partial(self.notify, Stage("refine"), 0, refine.steps))
        batch_size = self.settings.unet_batch_size or model.default_unet_batch_size(refine.snippet_len, shape[-2:])
        self.notify(Stage("refine"), first, refine.steps)
        for i in range(first, refine.steps):
            # a step is long: its batches report the step's count again (a callback may stop the run there)
            between = partial(self.notify, Stage("refine"), i, refine.steps)
            latents = self._refine_step(encoded.latents, latents, timesteps[i], plan.refine_indices(i), batch_size,
                                        between)
            if store.resumable:
                saved = store.array(f"refine_{i}", shape, store.latents_dtype(model.dtype))
                store.write(saved, slice(0, num_frames), _host(latents).numpy())
                store.checkpoint(RefineState(steps=i + 1))
            self.notify(Stage("refine"), i + 1, refine.steps)
        return self._decode_output(latents, encoded.size, out)

    def _refine_step(self, rgb_latents: torch.Tensor, latents: torch.Tensor, timestep: torch.Tensor,
                     idx: np.ndarray, batch_size: int, between: Callable[[], None] = lambda: None) -> torch.Tensor:
        """One refinement step over the snippets ``idx [S, n]``: each frame's new latent is the
        mean over the snippets that hold it; ``[N, 4, h, w]`` on the host. ``between`` is
        called before each batch."""
        device, snippet_len = self.model.device, idx.shape[1]
        idx = torch.from_numpy(idx)
        acc = torch.zeros(latents.shape, dtype=torch.float32)
        count = torch.zeros(len(latents), dtype=torch.float32)
        with HostWriter() as writer:
            for start in range(0, idx.shape[0], batch_size):
                between()
                frame_ids = idx[start : start + batch_size].reshape(-1)
                pred = self.model.denoise_snippets(to_device(rgb_latents[frame_ids], device),
                                                   to_device(latents[frame_ids], device), timestep, snippet_len)
                writer.put(partial(_accumulate, acc, count, frame_ids), pred.float(), as_numpy=False)
        return acc.div_(count[:, None, None, None]).to(self.model.dtype)  # no copy in fp32

    def _encode_depth(self, depth, timestep: torch.Tensor, noise: torch.Tensor,
                      between: Callable[[], None] = lambda: None) -> torch.Tensor:
        """The co-aligned depth encoded like RGB and noised to ``timestep`` with the initial noise:
        the refinement's first latents ``[N, 4, h, w]`` (host). ``between`` is called before each batch."""
        device, max_vae_bs = self.model.device, self.settings.max_vae_bs
        parts = []
        with HostWriter() as writer:  # latents reach the host without the device waiting
            for start in range(0, len(depth), max_vae_bs):
                d = to_device(torch.from_numpy(np.asarray(depth[start : start + max_vae_bs], np.float32)), device)
                writer.put(parts.append, self.model.encode_depth(d), as_numpy=False, copy=False)  # fresh
        latents = torch.cat(parts)
        del parts
        noise_host = noise.cpu()
        for start in range(0, len(latents), 256):  # in place, chunk by chunk (element-wise)
            part = latents[start : start + 256]
            part.copy_(self.model.add_noise(part, noise_host.expand(len(part), -1, -1, -1), timestep))
        return latents

    def _decode_output(self, latents: torch.Tensor, size: tuple[int, int], out) -> tuple[float, float]:
        """Decode the refined latents into ``out`` batch by batch (a checkpoint after each); its range."""
        store, device, max_vae_bs, num_frames = self.store, self.model.device, self.settings.max_vae_bs, len(latents)
        seen = store.resumed(RefineDecodeState) or RefineDecodeState(0, float("inf"), float("-inf"))
        first = seen.frames

        def write(rows: slice, maps: np.ndarray) -> None:
            store.write(out, rows, maps)
            seen.lo, seen.hi = min(seen.lo, float(maps.min())), max(seen.hi, float(maps.max()))
            store.checkpoint(RefineDecodeState(rows.stop, seen.lo, seen.hi))

        self.notify(Stage("refine decode"), first, num_frames)
        with HostWriter() as writer:
            for start in range(first, num_frames, max_vae_bs):
                maps = self.model.decode_depth(to_device(latents[start : start + max_vae_bs], device), size).float()
                writer.put(partial(write, slice(start, start + len(maps))), maps)
                self.notify(Stage("refine decode"), min(start + max_vae_bs, num_frames), num_frames)
        return seen.lo, seen.hi


class _MotionSample:
    """Small copies of a few frame pairs, spread over the video, scored for the automatic
    snippet length (every pair when the frame count is not known)."""

    def __init__(self, num_frames_hint: int | None):
        self.sample = None
        if num_frames_hint:
            self.sample = {int(i) for i in np.linspace(0, max(num_frames_hint - 2, 0), MOTION_PAIRS).round()}
            self.sample |= {i + 1 for i in self.sample}
        self.small: dict[int, np.ndarray] = {}

    def add(self, first: int, batch: list[np.ndarray]) -> None:
        """Frames ``first, first + 1, ...``: keep small copies of those sampled."""
        self.small.update({first + k: _small(f) for k, f in enumerate(batch) if self.sample is None or first + k in self.sample})

    def score(self) -> float:
        scores = [motion_score(np.stack([self.small[i], self.small[i + 1]])) for i in sorted(self.small)
                  if i + 1 in self.small]
        return float(np.median(scores)) if scores else 0.0


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


def renormalise(source, target, store: Store, chunk: int = MERGE_WINDOW,
                bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """``target = (source - min) / (max - min) * 2 - 1`` over the whole video (constant -> 0),
    chunk by chunk. Returns the min and max of ``source`` (``bounds`` when known, else a pass
    over ``source`` finds them)."""
    done = store.resumed(RenormaliseState)
    if done:
        return done.lo, done.hi
    if bounds is not None:
        lo, hi = bounds
    else:
        lo, hi = float("inf"), float("-inf")
        for i in range(0, len(source), chunk):
            part = source[i : i + chunk]
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    for i in range(0, len(source), chunk):
        part = source[i : i + chunk]
        store.write(target, slice(i, i + len(part)), np.zeros_like(part) if hi <= lo else (part - lo) / (hi - lo) * 2.0 - 1.0)
    store.checkpoint(RenormaliseState(lo=lo, hi=hi))
    return lo, hi


def _merge_checkpoint(store: Store, windows: int, lo: np.ndarray, hi: np.ndarray) -> None:
    store.checkpoint(MergeState(windows=windows, lo=float(lo), hi=float(hi)))


def _accumulate(acc: torch.Tensor, count: torch.Tensor, frame_ids: torch.Tensor, pred: torch.Tensor) -> None:
    acc.index_add_(0, frame_ids, pred)
    count.index_add_(0, frame_ids, torch.ones(len(frame_ids)))
