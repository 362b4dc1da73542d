"""Test support for the models' numerics: a deterministic mode, channels_last placement, and the
tolerance within which autocast inference agrees with float32 (moved here from the runtime package:
only tests use it).

Device choice and the autocast context used for inference live in
:mod:`napari_m2mrf.inference.devices` (float32 on CPU; bf16, else fp16, autocast on CUDA).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

# Largest difference of sigmoid probabilities between autocast and float32 inference that we accept,
# per autocast dtype (checked by test_hrnet_models.py on every device present).
AUTOCAST_PROBABILITY_TOLERANCE: dict[torch.dtype, float] = {torch.bfloat16: 0.05, torch.float16: 0.01}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(seed: int = 0) -> Iterator[None]:
    """Seeded, deterministic torch for the duration of the block; the previous settings come back after.

    Sets ``torch.use_deterministic_algorithms(True, warn_only=True)``, disables cuDNN autotuning,
    and sets ``CUBLAS_WORKSPACE_CONFIG`` as CUDA requires for deterministic matmuls. Everything these
    models run on the CPU is deterministic; on CUDA the backward of bilinear resizing has no
    deterministic kernel, which torch then reports with a warning instead of stopping training.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    seed_everything(seed)
    try:
        yield
    finally:
        enabled, warn_only, benchmark, cudnn_deterministic, workspace = previous
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = cudnn_deterministic
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def place_model(model: nn.Module, device: torch.device | str, channels_last: bool | None = None) -> nn.Module:
    """``model`` on ``device`` in eval mode; ``channels_last`` memory by default on CUDA only.

    Feed it inputs in the same memory format (``x.contiguous(memory_format=torch.channels_last)``).
    """
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format).eval()
