"""Runs under ``torchrun`` / ``accelerate launch``: one process per device, videos sharded.

Both launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous
variables). With ``WORLD_SIZE > 1`` every process joins a gloo process group (used only for
small metadata: frame counts and results), takes the device of its local rank and its own
share of the videos. The sharding is deterministic and balanced by frame count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

__all__ = ["DistContext", "balanced_shards", "init_distributed"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | None) -> str | None:
        """The device of this process: ``cuda:LOCAL_RANK`` when CUDA is used, else as asked."""
        import torch

        if not self.enabled:
            return requested
        if requested in (None, "auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested

    def all_gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order (just ``[obj]`` without a launcher)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def agree(self, error: BaseException | None) -> None:
        """Every rank says whether its step failed (a collective call: every rank must make it);
        when one did, every rank raises: its own error, or ``RuntimeError`` naming the rank that failed."""
        self._settle(error, None)

    def gathered(self, compute) -> list:
        """Every rank's ``compute()``, in rank order (a collective call). When it raised on any
        rank, every rank raises (as :meth:`agree`), so that none waits for ever at the next call."""
        error, value = None, None
        try:
            value = compute()
        except Exception as exc:
            error = exc
        return self._settle(error, value)

    def _settle(self, error: BaseException | None, value) -> list:
        said = self.all_gather((None, value) if error is None else
                               (f"rank {self.rank}: {type(error).__name__}: {error}", None))
        if error is not None:
            raise error
        failed = [m for m, _ in said if m is not None]
        if failed:
            raise RuntimeError(failed[0])
        return [v for _, v in said]

    def close(self, barrier: bool = True) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if barrier:
                    dist.barrier()
                dist.destroy_process_group()


def init_distributed() -> DistContext:
    """Join the launcher's process group when there is one; a plain run gets rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    ctx = DistContext(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        # gloo: only small objects travel; a long batch must not hit the default 30 min timeout
        timeout = timedelta(days=7)
        store, _, _ = next(dist.rendezvous("env://", ctx.rank, world, timeout=timeout))
        # After an elastic restart (torchrun --max-restarts) the launcher's store still holds the
        # previous round's addresses, and gloo would dial the dead processes: one namespace per round.
        round_ = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"rollingdepth/round{round_}", store)
        dist.init_process_group("gloo", store=store, rank=ctx.rank, world_size=world, timeout=timeout)
    return ctx


def balanced_shards(weights: Sequence[int], world_size: int) -> list[list[int]]:
    """Indices of items per rank: longest first to the least loaded rank (ties: lower rank).

    Deterministic for given weights; every index lands on exactly one rank.
    """
    order = sorted(range(len(weights)), key=lambda i: (-max(int(weights[i]), 1), i))
    loads = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for i in order:
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shards[rank].append(i)
        loads[rank] += max(int(weights[i]), 1)
    return [sorted(s) for s in shards]
