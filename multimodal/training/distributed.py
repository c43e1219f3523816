"""torch.distributed for torchrun: one process per GPU (nccl) or per CPU worker (gloo).

Started without torchrun (no WORLD_SIZE in the environment), everything here is a no-op and
the trainer runs as one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from multimodal.device import pick_device


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints the progress bar and writes logs, samples and checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce(self, values: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """A float tensor reduced over every process: "mean", "max" or "min"."""
        if not self.enabled:
            return values
        reduce_op = {"mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
        values = values.clone()
        dist.all_reduce(values, op=reduce_op)
        return values / self.world_size if op == "mean" else values


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun set up (gloo on the CPU, nccl on CUDA) and pick this
    process's device; without torchrun, one process on `device_name`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world_size == 1:
        return Distributed(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size), device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
