"""Running under ``torchrun``: process group, device per process, DDP wrapping, reductions.

``torchrun --nproc_per_node N -m training CONFIG.yaml`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`start` then joins the process group (NCCL on GPUs, gloo on CPU). Without
those variables everything here is a no-op for one process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from napari_m2mrf.errors import UserError
from training.sync_batchnorm import convert_batchnorm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: ``rank`` of ``world_size``, and its ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs and checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def choose_device(request: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when a GPU is present, else ``cpu``; ``cuda`` → the local
    rank's GPU; ``cuda:N``/``cpu`` as given. ``UserError`` when CUDA is asked for but absent."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
        logger.info("run.device auto: %s (CUDA %s)", request, "available" if request == "cuda" else "not available")
    if request == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"run.device is {request!r} but this machine has no usable CUDA GPU; use 'cpu' or 'auto'")
    return torch.device(f"cuda:{local_rank}") if request == "cuda" else torch.device(request)


def start(device_request: str) -> Processes:
    """Join the torchrun process group when there is one; choose this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(device_request, local_rank)
    if world_size == 1:
        logger.info("training on %s, one process", device)
        return Processes(0, 1, device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        logger.info("joining the torchrun group: %d processes, %s backend, this one on %s", world_size, backend, device)
        dist.init_process_group(backend=backend)
    return Processes(dist.get_rank(), dist.get_world_size(), device)


def stop(processes: Processes) -> None:
    """Leave the process group (after the last collective)."""
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(
    model: nn.Module, processes: Processes, sync_batchnorm: bool, find_unused_parameters: bool = False
) -> nn.Module:
    """``model`` on its device; under torchrun with synchronised BatchNorm (so the statistics are
    those of the global batch, as in one process) inside DistributedDataParallel.
    ``find_unused_parameters``: some parameters get no gradient (e.g. a deformation module in
    front of the uniform sampler without edge loss)."""
    model.to(processes.device)
    if not processes.distributed:
        return model
    if sync_batchnorm:
        if processes.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model = convert_batchnorm(model)
    device_ids = [processes.device.index] if processes.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_over_processes(values: Mapping[str, torch.Tensor], processes: Processes) -> dict[str, float]:
    """Each scalar averaged over the processes (the global-batch mean for equal local batches)."""
    names = sorted(values)
    stacked = torch.stack([values[name].detach().float().reshape(()) for name in names])
    if processes.distributed:
        stacked = stacked.to(processes.device)
        dist.all_reduce(stacked)
        stacked /= processes.world_size
    return {name: float(value) for name, value in zip(names, stacked.cpu())}


def any_process(flag: bool, processes: Processes) -> bool:
    """True on every process when ``flag`` is true on at least one (e.g. a stop request)."""
    if not processes.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=processes.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(processes: Processes) -> None:
    """Wait for every process (no-op for one)."""
    if processes.distributed:
        dist.barrier()
