"""Data-parallel processes: where this process sits, for training and for evaluation.

`torchrun` (or any launcher) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
without them everything runs as one process and no process group is created. Training joins
with NCCL on CUDA and gloo on CPU; evaluation exchanges only Python objects, so gloo suffices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from taptr.device import resolve_device


@dataclass
class DistributedContext:
    """This process: rank among world_size, its local rank and device; owns_group when this
    context created the process group (and so destroys it on `close`)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @classmethod
    def join(cls, device_request=None, backend: str | None = None) -> "DistributedContext":
        """Join the process group the launcher's environment describes, if any.

        device_request: as for `taptr.device.resolve_device` ("auto" gives this process's GPU,
        cuda:LOCAL_RANK). backend: None = NCCL on CUDA, gloo on CPU.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_request, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        owns_group = False
        if world_size > 1 and not dist.is_initialized():
            backend = backend or ("nccl" if device.type == "cuda" else "gloo")
            init_kwargs = {"device_id": device} if backend == "nccl" else {}
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                    **init_kwargs)
            owns_group = True
        return cls(rank, world_size, local_rank, device, owns_group)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def takes(self, index: int) -> bool:
        """Whether item `index` of a shared list is this rank's (r, r + world, ...)."""
        return index % self.world_size == self.rank

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True if `flag` is True on any rank (a collective: every rank must call it)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather(self, value) -> list:
        """[value of rank 0, value of rank 1, ...] on every rank (a collective)."""
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def gather_lists(self, items: list) -> list:
        """The concatenation of every rank's `items`, on every rank (a collective)."""
        return [item for part in self.gather(list(items)) for item in part]

    def close(self) -> None:
        """Leave the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False
