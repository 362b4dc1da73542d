"""The device: what it is, synchronising with it, its peak memory and its autocast dtype."""

from __future__ import annotations

import os
import platform
import resource
from typing import Any

import torch


def device_info() -> dict[str, Any]:
    """Device name, torch/CUDA/cuDNN versions, Python, CPU count (and GPU memory in GiB on CUDA)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device_name=torch.cuda.get_device_name(0),
            device_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    return info


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a timer brackets finished work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_bytes(device: str) -> tuple[int, str]:
    """Peak memory so far in bytes and its source: ``torch.cuda.max_memory_allocated`` on CUDA, the
    process's peak RSS elsewhere."""
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss (CPU run)"


def autocast_dtype(device: str) -> torch.dtype:
    """bfloat16, or float16 on a CUDA device without bfloat16."""
    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
