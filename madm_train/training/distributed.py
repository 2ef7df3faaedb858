"""Multi-GPU training launched by ``torchrun``: one process per device, gradients averaged.

The reference trains on two GPUs with one source and one target image each. Every process here
holds a full replica, draws its own batch (generators seeded with the rank) and, after each
backward pass, averages the gradients of all trainable parameters across processes with one
all-reduce of a flat buffer — what DistributedDataParallel does, without its one-forward-per-
backward assumption (a MADM iteration runs the student twice and the teacher once before its
single backward). Replicas therefore stay identical; :func:`check_replicas_equal` proves it at
the end of a run. Only rank 0 writes logs, checkpoints, evaluations and the model.

NCCL is used on CUDA, gloo on the CPU (which is how the tests run two processes here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from madm_ros.errors import ConfigError

__all__ = ["Distributed", "average_gradients", "broadcast_weights", "check_replicas_equal", "init_distributed"]


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that writes files."""
        return self.rank == 0


def init_distributed(device_type: str) -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (a no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if torch.cuda.device_count() <= local_rank:
            raise ConfigError(f"process {rank} wants cuda:{local_rank} but {torch.cuda.device_count()} GPU(s) are visible; "
                              "start torchrun with --nproc_per_node ≤ the number of GPUs")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank)


def broadcast_weights(module: Any, info: Distributed) -> None:
    """Copy rank 0's parameters and buffers into every process (as DDP does at construction).

    Initial weights can differ between processes even with one seed, e.g. when only rank 0 wrote
    a model folder and consumed random numbers doing so.
    """
    if not info.enabled:
        return
    import torch.distributed as dist

    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: Iterable[Any], info: Distributed) -> None:
    """Replace every gradient by its mean over all processes (parameters without a gradient count as zero)."""
    if not info.enabled:
        return
    import torch
    import torch.distributed as dist

    parameters = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for parameter, grad in zip(parameters, grads):
        n = grad.numel()
        parameter.grad = flat[offset : offset + n].view_as(grad).to(grad.dtype)
        offset += n


def check_replicas_equal(parameters: Iterable[Any], info: Distributed) -> None:
    """Raise if the replicas' weights differ (a checksum compared across processes)."""
    if not info.enabled:
        return
    import torch
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in parameters]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"model replicas diverged across processes (weight checksums {low.item()} … {high.item()})")
