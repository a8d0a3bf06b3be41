"""Depth for long videos in bounded memory: the pipeline's steps as streaming passes.

Host memory grows by well under 0.5 MB per frame at 768 x 432 and accelerator memory not at
all with the number of frames:

1. Frames stream in (an iterator), are resized, normalised and encoded batch by batch; only
   their latents stay (on the host).
2. Snippets go through the UNet in batches and are decoded at once; what co-alignment needs
   (every 10th pixel of each snippet frame) stays on the host, the snippets' depth latents
   spill to ``.npy`` files in ``workdir``, written by rows (:class:`NpyFile`).
3. Co-alignment runs on the subsampled snippets (as in memory).
4. The merge runs frame window by frame window: the latents of the snippet frames that show
   those frames are decoded again and averaged into the output array (run-video's is a
   :class:`NpyFile`). The frame latents are freed first unless refinement follows.
5. Re-normalisation and refinement work on that array in chunks.

Batches are formed exactly as in :meth:`RollingDepthPipeline.__call__`, so a clip that fits
in memory gets the same prediction either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .background import HostWriter, prefetch
from .coalign import problem_from_subsampled, solve, subsample
from .device import to_device
from .num_view import choose_num_view
from .snippets import plan_snippets, refine_dilations, snippet_indices

__all__ = ["NpyFile", "StreamResult", "limit_heap_growth", "predict_streaming"]

MERGE_WINDOW = 32  # frames merged at a time
# Co-alignment runs on the accelerator only while its problem (about 3x the subsampled maps)
# fits in this many bytes; longer videos co-align on the host, so that accelerator memory has
# a ceiling that does not depend on the video's length.
COALIGN_DEVICE_BYTES = 1 << 30


@dataclass
class StreamResult:
    """What a streaming run used and how long it took; the depth is in the output array."""

    num_frames: int
    size: tuple[int, int]
    settings: dict
    timings: dict
    coalign_loss: float
    depth_range: tuple[float, float]


def limit_heap_growth() -> bool:
    """Keep glibc from holding freed batch buffers: large blocks go back to the system.

    glibc raises its mmap threshold as big blocks are freed, after which the many batch-sized
    buffers of a long run come from the heap and stay resident: peak RSS then grows with the
    video although nothing is kept. Fixing the threshold (and the arena count) keeps the
    process's memory flat (measured: ``benchmarks/bench_memory.py``). Process-wide, so the
    command calls it, not the library. Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold, m_arena_max = -3, -8
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_arena_max, 2))
    except (OSError, AttributeError):
        return False


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _np_dtype(dtype: torch.dtype):
    return np.float16 if dtype == torch.float16 else np.float32  # bf16 round-trips through fp32


class NpyFile:
    """A ``.npy`` file read and written by rows with plain file I/O.

    Unlike a memory map, the rows written or read do not stay mapped into the process, so
    they do not count towards its resident memory (the page cache holds them).
    """

    def __init__(self, path: Path, shape, dtype, mode: str = "w+", row_ndim: int | None = None):
        """``row_ndim``: rows are the trailing dims (default: all but the first); e.g. a
        ``[S, n, H, W]`` array written by ``[H, W]`` rows."""
        self.path, self.array_shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        row_ndim = len(self.array_shape) - 1 if row_ndim is None else row_ndim
        self.shape = (int(np.prod(self.array_shape[: len(self.array_shape) - row_ndim], dtype=np.int64)),
                      *self.array_shape[len(self.array_shape) - row_ndim :])
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if mode == "w+":
            with open(self.path, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.array_shape})
                self.offset = f.tell()
                f.truncate(self.offset + self.row_bytes * self.shape[0])
        else:
            with open(self.path, "rb") as f:
                np.lib.format.read_magic(f)
                np.lib.format.read_array_header_1_0(f)
                self.offset = f.tell()
        self._file = open(self.path, "r+b" if mode == "w+" else "rb")

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, key) -> range:
        if isinstance(key, (int, np.integer)):
            key = slice(int(key) if key >= 0 else int(key) + self.shape[0], None)
            r = range(*key.indices(self.shape[0]))
            return range(r.start, r.start + 1)
        if not isinstance(key, slice):
            raise TypeError("NpyFile takes an int or a slice of rows (or take())")
        r = range(*key.indices(self.shape[0]))
        if r.step != 1:
            raise ValueError("NpyFile slices must be contiguous")
        return r

    def __setitem__(self, key, value) -> None:
        r = self._rows(key)
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype), (len(r), *self.shape[1:])))
        self._file.seek(self.offset + r.start * self.row_bytes)
        self._file.write(data.tobytes())

    def __getitem__(self, key) -> np.ndarray:
        r = self._rows(key)
        self._file.seek(self.offset + r.start * self.row_bytes)
        data = np.frombuffer(self._file.read(len(r) * self.row_bytes), self.dtype).reshape(len(r), *self.shape[1:])
        return data[0].copy() if isinstance(key, (int, np.integer)) else data.copy()

    def take(self, rows) -> np.ndarray:
        """Rows in the given (any) order."""
        return np.stack([self[int(i)] for i in rows]) if len(rows) else np.empty((0, *self.shape[1:]), self.dtype)

    def min_max(self, chunk: int = 64) -> tuple[float, float]:
        lo, hi = float("inf"), float("-inf")
        for i in range(0, len(self), chunk):
            part = self[i : i + chunk]
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
        return lo, hi

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _Spill:
    """Row-wise ``.npy`` files in a work folder (the caller creates and removes the folder)."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.count = 0

    def array(self, shape, dtype) -> NpyFile:
        self.count += 1
        return NpyFile(self.workdir / f"spill{self.count}.npy", shape, dtype)


@torch.no_grad()
def predict_streaming(
    pipe,
    frames: Iterable[np.ndarray],
    make_output: Callable[[int, int, int], np.ndarray],
    *,
    workdir: Path,
    processing_res: int = 768,
    dilations=(1, 25),
    cap_dilation: bool = True,
    snippet_lengths=(3,),
    refine_step: int = 0,
    refine_snippet_len: int = 3,
    refine_start_dilation: int = 6,
    coalign: str = "fast",
    max_vae_bs: int = 4,
    unet_batch_size: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[str, int, int], None] | None = None,
    attn_span: dict | None = None,
    num_frames_hint: int | None = None,
    snippets_output: Callable[[int, tuple], np.ndarray] | None = None,
) -> StreamResult:
    """Predict depth for a stream of uint8 RGB frames into ``make_output(N, H, W)`` (float32).

    ``make_output`` is called once the frame count is known and returns the array the
    prediction is written to (e.g. a ``np.lib.format.open_memmap``). ``workdir`` is an
    existing folder for spilled data; the caller removes it. ``snippets_output(group, shape)``,
    when given, returns an array ``[S, n, H, W]`` per dilation (or a :class:`NpyFile` written by
    ``[H, W]`` rows) that receives the decoded snippets.
    """
    notify = callback or (lambda stage, done, total: None)
    spill = _Spill(workdir)
    timings: dict[str, float] = {}
    dilations, lengths = pipe.check_inputs(
        np.zeros((1, 1, 1, 3), np.uint8), processing_res, dilations, snippet_lengths, refine_step,
        refine_snippet_len, refine_start_dilation, coalign, max_vae_bs, unet_batch_size, attn_span,
    )
    pipe.prepare(attn_span)
    device, dtype = pipe.unet.device, pipe.unet.dtype

    # 1. Encode the frames as they stream in; keep a few low-resolution pairs for auto num_view
    t0 = time.perf_counter()
    latents, size, in_size, seen = [], None, None, 0
    motion_pairs = set()
    if lengths is None and num_frames_hint:
        motion_pairs = {int(i) for i in np.linspace(0, max(num_frames_hint - 2, 0), 16).round()}
    motion_frames: dict[int, np.ndarray] = {}
    with HostWriter() as writer:  # latents reach the host without the device waiting
        for batch in _batched(frames, max_vae_bs):
            chunk = np.stack(batch)  # [B, H, W, 3] uint8
            if size is None:
                in_size = chunk.shape[1:3]
                size = pipe.processing_size(in_size[0], in_size[1], processing_res)
            elif chunk.shape[1:3] != in_size:
                raise ValueError(f"frames: frame {seen} has size {chunk.shape[1:3]}, the first had {in_size}")
            writer.put(latents.append, pipe._encode_frames(chunk, size, max_vae_bs, lambda *a: None), as_numpy=False,
                       copy=False)  # fresh
            if lengths is None:
                for k in range(len(batch)):
                    if (seen + k) in motion_pairs or (seen + k - 1) in motion_pairs or not num_frames_hint:
                        motion_frames[seen + k] = _small(batch[k])
            seen += len(batch)
            notify("encode", seen, max(seen, num_frames_hint or 0))
    if seen == 0:
        raise ValueError("frames: the video has no frames")
    rgb_latents = _concat_consuming(latents)  # [N, 4, h, w] on the host
    num_frames, latent_hw = seen, tuple(rgb_latents.shape[-2:])
    timings["encode"] = time.perf_counter() - t0

    auto_choice = None
    if lengths is None:
        pairs = [(motion_frames[i], motion_frames[i + 1]) for i in sorted(motion_frames) if i + 1 in motion_frames]
        n_auto, auto_choice = choose_num_view(None, device, latent_hw, dtype, motion=_pairs_motion(pairs),
                                              num_frames=num_frames)
        lengths = [n_auto] * len(dilations)
    plan = plan_snippets(num_frames, dilations, lengths, cap_dilation)

    noise = pipe._noise((1, 4, *latent_hw), generator)  # [1, 4, h, w]
    pipe.empty_text_embedding()

    # 2. Snippets: UNet in batches, decode at once (VAE batches as in memory), keep subsampled maps.
    # Host copies and file writes run in a background thread (no device sync in the loop).
    t0 = time.perf_counter()
    clock = _Clock(device)  # time spent decoding, without syncing the device in the loop
    subsampled, spilled, batch_sizes = [], [], []
    min_value = torch.full((), float("inf"), device=device)
    pixels = subsample(torch.empty(1, *size)).shape[-1]
    with HostWriter() as writer:
        for d, n in plan:
            idx = snippet_indices(num_frames, n, d)  # [S, n]
            bs = unet_batch_size or pipe.default_unet_batch_size(n, latent_hw)
            batch_sizes.append(bs)
            sub = np.empty((idx.size, pixels), np.float32)  # [S*n, P]
            lat_store = spill.array((idx.size, 4, *latent_hw), _np_dtype(dtype))  # [S*n, 4, h, w]
            full = snippets_output(len(subsampled), (len(idx), n, *size)) if snippets_output else None
            if isinstance(full, np.ndarray):
                full = full.reshape(-1, *size)  # written by snippet-frame rows
            pending: list[torch.Tensor] = []
            done = 0  # snippet frames decoded so far (flattened order)

            def flush(final: bool):
                nonlocal pending, done, min_value
                queue = torch.cat(pending) if pending else None
                pending = []
                while queue is not None and (len(queue) >= max_vae_bs or (final and len(queue) > 0)):
                    part, queue = queue[:max_vae_bs], queue[max_vae_bs:]
                    tick = clock.start()
                    maps = pipe.decode_depth_safe(part, size).float()  # [b, H, W]
                    clock.stop(tick)
                    min_value = torch.minimum(min_value, maps.min())
                    rows = slice(done, done + len(part))
                    writer.put(partial(_set_rows, sub, rows), subsample(maps))
                    if full is not None:
                        writer.put(partial(_set_rows, full, rows), maps)
                    done += len(part)
                if queue is not None and len(queue):
                    pending = [queue]

            pipe.scheduler.set_timesteps(1)  # on the host: the scheduler's step then never syncs
            timestep = pipe.scheduler.timesteps[0]
            for start in range(0, len(idx), bs):
                frame_ids = torch.from_numpy(idx[start : start + bs].reshape(-1))
                rgb = to_device(rgb_latents[frame_ids], device)
                pred = pipe._unet_step(rgb, noise.expand(len(frame_ids), -1, -1, -1), timestep, n)  # [b*n, 4, h, w]
                spill_dtype = torch.float16 if dtype == torch.float16 else torch.float32
                writer.put(partial(_set_rows, lat_store, slice(start * n, start * n + len(pred))), pred.to(spill_dtype))
                pending.append(pred)
                flush(final=False)
                notify(f"snippets d={d}", min(start + bs, len(idx)), len(idx))
            flush(final=True)
            subsampled.append(sub.reshape(len(idx), n, pixels))
            spilled.append(lat_store)
        writer.drain()
    # the loop's names (and flush's closure) would keep the last group's maps alive to the end
    sub = full = pred = rgb = flush = None
    for lat in spilled:
        lat.flush()
    min_value = float(min_value)
    decode_seconds = clock.total()
    timings["snippets"] = time.perf_counter() - t0 - decode_seconds
    timings["decode"] = decode_seconds

    # 3. Co-align on the subsampled snippets (shifted in place: no second copy). On the
    # accelerator while the problem fits its fixed budget, so its memory stays bounded.
    t0 = time.perf_counter()
    notify("coalign", 0, 1)
    used = [d for d, _ in plan]
    problem_bytes = sum(x.nbytes for x in subsampled) * 3  # x, plus targets and temporaries
    coalign_device = device if problem_bytes <= COALIGN_DEVICE_BYTES else torch.device("cpu")
    problem = problem_from_subsampled(subsampled, used, num_frames, min_value, coalign_device, inplace=True)
    del subsampled
    scales, shifts, loss, iterations = solve(problem, coalign)
    del problem
    notify("coalign", 1, 1)
    timings["coalign"] = time.perf_counter() - t0

    # 4. Merge window by window into the output (or a spill array when refinement follows)
    t0 = time.perf_counter()
    if refine_step == 0:
        del rgb_latents  # only refinement needs the frame latents again
    coaligned = make_output(num_frames, *size) if refine_step == 0 else spill.array((num_frames, *size), np.float32)
    _merge_windows(pipe, plan, spilled, scales, shifts, min_value, num_frames, size, max_vae_bs, coaligned, dtype, device, notify)
    lo, hi = _renormalise_in_place(coaligned)
    timings["merge"] = time.perf_counter() - t0

    # 5. Refinement
    refine_len = min(refine_snippet_len, num_frames)
    refine_d0 = plan_snippets(num_frames, [refine_start_dilation], [refine_len], True)[0][0]
    schedule = refine_dilations(refine_step, refine_d0) if refine_step > 0 else []
    depth_range = (-1.0, 1.0) if hi > lo else (0.0, 0.0)
    if refine_step > 0:
        t0 = time.perf_counter()
        out = make_output(num_frames, *size)
        depth_range = _refine_streaming(pipe, rgb_latents, noise, coaligned, refine_step, refine_len, schedule,
                                        size, max_vae_bs, unet_batch_size, out, notify)
        timings["refine"] = time.perf_counter() - t0

    settings = pipe.run_settings(
        num_frames=num_frames, input_size=in_size, size=size, processing_res=processing_res, plan=plan,
        snippets_per_dilation=[len(s) // n for s, (_, n) in zip(spilled, plan)], cap_dilation=cap_dilation,
        refine_step=refine_step, refine_snippet_len=refine_snippet_len, refine_len=refine_len,
        refine_start_dilation=refine_start_dilation, refine_d0=refine_d0, refine_schedule=schedule,
        coalign=coalign, coalign_iterations=iterations, max_vae_bs=max_vae_bs, unet_batch_size=batch_sizes,
        num_view_auto=auto_choice,
    )
    settings["streaming"] = True
    return StreamResult(num_frames, tuple(size), settings, timings, float(loss), depth_range)


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


def _set_rows(array, rows: slice, values) -> None:
    array[rows] = values


def _concat_consuming(chunks: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(chunks)``, freeing each chunk once copied (no second full copy)."""
    out = torch.empty((sum(len(c) for c in chunks), *chunks[0].shape[1:]), dtype=chunks[0].dtype)
    start = 0
    chunks.reverse()
    while chunks:
        c = chunks.pop()
        out[start : start + len(c)] = c
        start += len(c)
    return out


def _small(frame: np.ndarray) -> np.ndarray:
    """A copy at most 256 pixels on the longer edge, for the motion score."""
    import cv2

    h, w = frame.shape[:2]
    f = min(1.0, 256 / max(h, w))
    return cv2.resize(np.asarray(frame), (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)


def _pairs_motion(pairs) -> float:
    from .num_view import motion_score

    if not pairs:
        return 0.0
    scores = [motion_score(np.stack([a, b])) for a, b in pairs]
    return float(np.median(scores))


def _merge_windows(pipe, plan, spilled, scales, shifts, min_value, num_frames, size, max_vae_bs, out, dtype, device, notify):
    """``out[f] = mean of s*(x - min) + t`` over snippet frames showing f, decoded again window by window.

    The next windows' latents are read from the spill files in a background thread, and the
    merged frames are written to ``out`` in another, while the device decodes.
    """
    order, frames_of = [], []
    for (d, n), lat in zip(plan, spilled):
        flat = snippet_indices(num_frames, n, d).reshape(-1)  # frame of each snippet frame
        o = np.argsort(flat, kind="stable")
        order.append(o)
        frames_of.append(flat[o])
    s_all = [torch.from_numpy(np.asarray(s, np.float32)).to(device) for s in scales]
    t_all = [torch.from_numpy(np.asarray(t, np.float32)).to(device) for t in shifts]

    def windows():
        """Per window: (f0, f1, [(group, flat indices, frame in window, latents [b, 4, h, w])])."""
        for f0 in range(0, num_frames, MERGE_WINDOW):
            f1 = min(num_frames, f0 + MERGE_WINDOW)
            batches = []
            for g, (lat, o, fr) in enumerate(zip(spilled, order, frames_of)):
                lo, hi = np.searchsorted(fr, f0, "left"), np.searchsorted(fr, f1, "left")
                for start in range(lo, hi, max_vae_bs):
                    part = o[start : min(hi, start + max_vae_bs)]  # flat indices s*n + j
                    batches.append((g, part, fr[start : start + len(part)] - f0, lat.take(part)))
            yield f0, f1, batches

    with HostWriter(depth=1) as writer:  # a window is 32 full-size frames: keep few of them around
        for f0, f1, batches in prefetch(windows(), depth=1):
            acc = torch.zeros((f1 - f0, *size), dtype=torch.float32, device=device)
            count = torch.zeros(f1 - f0, dtype=torch.float32, device=device)
            for g, part, local, z in batches:
                n = plan[g][1]
                z = to_device(torch.from_numpy(np.asarray(z, np.float32)), device, dtype)
                maps = pipe.decode_depth_safe(z, size).float()  # [b, H, W]
                snip = to_device(torch.from_numpy(part // n), device)
                local = to_device(torch.from_numpy(local), device)
                values = (maps - min_value) * s_all[g][snip][:, None, None] + t_all[g][snip][:, None, None]
                acc.index_add_(0, local, values)
                count.index_add_(0, local, torch.ones(len(part), device=device))
            writer.put(partial(_set_rows, out, slice(f0, f1)), acc / count[:, None, None], copy=False)  # fresh
            notify("merge", f1, num_frames)


def _renormalise_in_place(array: np.ndarray, chunk: int = MERGE_WINDOW) -> tuple[float, float]:
    """``(v - min) / (max - min) * 2 - 1`` over the whole array, chunk by chunk."""
    lo, hi = float("inf"), float("-inf")
    for i in range(0, len(array), chunk):
        lo, hi = min(lo, float(array[i : i + chunk].min())), max(hi, float(array[i : i + chunk].max()))
    for i in range(0, len(array), chunk):
        part = array[i : i + chunk]
        array[i : i + chunk] = 0.0 if hi <= lo else ((part - lo) / (hi - lo) * 2.0 - 1.0)
    if hasattr(array, "flush"):
        array.flush()
    return lo, hi


def _refine_streaming(pipe, rgb_latents, noise, coaligned, refine_step, snippet_len, schedule, size, max_vae_bs,
                      unet_batch_size, out, notify) -> tuple[float, float]:
    """Refinement with every [N, ...] tensor on the host; only batches visit the device.

    Host memory: the frame latents, the current depth latents and one accumulator, each
    ``[N, 4, h, w]``. Accumulation and output writes run in a background thread.
    """
    device, dtype = pipe.unet.device, pipe.unet.dtype
    num_frames = rgb_latents.shape[0]
    parts = []
    with HostWriter() as writer:  # latents reach the host without the device waiting
        for start in range(0, num_frames, max_vae_bs):
            d = to_device(torch.from_numpy(np.asarray(coaligned[start : start + max_vae_bs], np.float32)), device)
            writer.put(parts.append, pipe.encode(d[:, None].expand(-1, 3, -1, -1).to(dtype)), as_numpy=False,
                       copy=False)  # fresh
    latents = _concat_consuming(parts)  # [N, 4, h, w] host
    pipe.scheduler.set_timesteps(2 * refine_step)  # on the host
    timesteps = pipe.scheduler.timesteps[refine_step:]
    noise_host = noise.cpu()
    for start in range(0, num_frames, 256):  # in place, chunk by chunk (element-wise)
        chunk = latents[start : start + 256]
        chunk.copy_(pipe.scheduler.add_noise(chunk, noise_host.expand(len(chunk), -1, -1, -1), timesteps[:1]))
    bs = unet_batch_size or pipe.default_unet_batch_size(snippet_len, tuple(latents.shape[-2:]))
    with HostWriter() as writer:
        for i, (t, dilation) in enumerate(zip(timesteps, schedule)):
            idx = torch.from_numpy(snippet_indices(num_frames, snippet_len, dilation))
            acc = torch.zeros(latents.shape, dtype=torch.float32)
            count = torch.zeros(num_frames, dtype=torch.float32)
            for start in range(0, idx.shape[0], bs):
                frame_ids = idx[start : start + bs].reshape(-1)
                pred = pipe._unet_step(to_device(rgb_latents[frame_ids], device), to_device(latents[frame_ids], device),
                                       t, snippet_len)
                writer.put(partial(_accumulate, acc, count, frame_ids), pred.float(), as_numpy=False)
            writer.drain()
            latents = acc.div_(count[:, None, None, None]).to(dtype)  # no copy in fp32
            del acc
            notify("refine", i + 1, refine_step)
        lo = torch.full((), float("inf"), device=device)
        hi = torch.full((), float("-inf"), device=device)
        for start in range(0, num_frames, max_vae_bs):
            maps = pipe.decode_depth_safe(to_device(latents[start : start + max_vae_bs], device), size).float()
            writer.put(partial(_set_rows, out, slice(start, start + len(maps))), maps)
            lo, hi = torch.minimum(lo, maps.min()), torch.maximum(hi, maps.max())
            notify("refine decode", min(start + max_vae_bs, num_frames), num_frames)
    if hasattr(out, "flush"):
        out.flush()
    return float(lo), float(hi)


def _accumulate(acc: torch.Tensor, count: torch.Tensor, frame_ids: torch.Tensor, pred: torch.Tensor) -> None:
    acc.index_add_(0, frame_ids, pred)
    count.index_add_(0, frame_ids, torch.ones(len(frame_ids)))
