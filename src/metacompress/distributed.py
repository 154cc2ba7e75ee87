"""Process-group set-up so the same code runs alone or under ``torchrun --nproc_per_node=N``."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metacompress.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (a GPU if there is one: ``cuda:LOCAL_RANK``, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N`` as a device; a UserError naming ``--device`` when it cannot be had."""
    if name is None or str(name) == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available here (torch {torch.__version__})")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        if device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return device


def init_distributed(device: str | torch.device | None = "cpu") -> DistContext:
    """Join the process group torchrun describes in the environment (NCCL on GPU, gloo on CPU),
    on ``device`` (see ``resolve_device``; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``).

    Without torchrun's variables this is a single process of world size 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def single_process(device: str | torch.device | None = "cpu") -> DistContext:
    """The context of a plain single-process run on ``device``."""
    return DistContext(0, 1, 0, resolve_device(device))


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all processes (a no-op in a single process)."""
    if ctx.is_distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()
