"""Data-parallel training with torch.distributed: each process takes its share of every step's scans.

Launched by ``torchrun`` (or ``geot train --nproc N``), which sets RANK / WORLD_SIZE. Gradients are
averaged by DistributedDataParallel; the few running statistics of the GeoT objective are reduced here,
so every process holds the same state and the run matches a single-process run.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from geot.errors import GeotError


def setup(device: torch.device) -> tuple[int, int]:
    """Join the process group if launched by torchrun; return (rank, world size), (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True in the first process (or when not distributed), also before the process group exists."""
    if active():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def local_device(device: torch.device) -> torch.device:
    """One GPU per process on multi-GPU machines."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        rank, gpus = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if rank >= gpus:
            raise GeotError(f"process {rank} has no GPU of its own: {os.environ.get('LOCAL_WORLD_SIZE', '?')} "
                            f"processes on a machine with {gpus} GPU(s); start at most {gpus} "
                            "(--nproc), or train on the CPU (--set device=cpu)")
        return torch.device("cuda", rank)
    return device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (no-op without a process group)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def average_gradients(parameters) -> None:
    """Average the gradients of parameters that live outside DistributedDataParallel."""
    if not active():
        return
    world = dist.get_world_size()
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def global_argmax_rows(values: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each column c: the best ``values[c]`` over processes and the ``rows[c]`` that came with it."""
    if not active():
        return values, rows
    world = dist.get_world_size()
    all_values = [torch.empty_like(values) for _ in range(world)]
    all_rows = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(all_values, values)
    dist.all_gather(all_rows, rows)
    stacked = torch.stack(all_values)                       # (world, C)
    winner = stacked.argmax(dim=0)                          # first process wins ties, as argmax over a concat
    best = stacked.gather(0, winner[None]).squeeze(0)
    chosen = torch.stack(all_rows)[winner, torch.arange(len(winner), device=rows.device)]
    return best, chosen


def barrier() -> None:
    if active():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
