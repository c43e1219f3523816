"""torch.distributed for torchrun and SLURM's srun: one process per GPU (nccl) or per CPU
worker (gloo).

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. srun sets
SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS and SLURM_JOB_NODELIST instead: the rank, local rank
and world size are read from those (as open_clip's `world_info_from_env` does) and the
rendezvous is the job's first node, as `scontrol show hostnames | head -1` gives it. Started
with neither (one task), everything here is a no-op and the trainer runs as one process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
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


# The port of a SLURM job's rendezvous unless MASTER_PORT is set: torchrun's default.
SLURM_MASTER_PORT = 29500


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launch, and where the processes meet: `rendezvous` is
    "host:port" under srun, None under torchrun (which set MASTER_ADDR and MASTER_PORT)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    rendezvous: str | None = None


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: "gpu[07-09,12],cpu1" → "gpu07"."""
    first = re.match(r"[^,\[]*(\[[^\]]*\])?[^,]*", nodelist.strip()).group(0)
    return re.sub(r"\[([^\],-]*)[^\]]*\]", r"\1", first)


def launch_from_env(env: Mapping[str, str]) -> Launch:
    """The launch torchrun or srun describes in `env`, torchrun's variables first."""
    if "WORLD_SIZE" in env:
        return Launch(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), int(env["WORLD_SIZE"]))
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        host = env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        port = env.get("MASTER_PORT") or str(SLURM_MASTER_PORT)
        return Launch(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), int(env["SLURM_NTASKS"]),
                      f"tcp://{host}:{port}")
    return Launch()


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun or srun set up (gloo on the CPU, nccl on CUDA) and pick
    this process's device; launched by neither, one process on `device_name`."""
    launch = launch_from_env(os.environ)
    device = pick_device(device_name)
    if launch.world_size == 1:
        return Distributed(), device
    rank, local_rank, world_size = launch.rank, launch.local_rank, launch.world_size
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=launch.rendezvous, rank=rank, world_size=world_size)
    return Distributed(rank, world_size), device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
