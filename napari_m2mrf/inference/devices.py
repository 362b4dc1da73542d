"""Where and in which precision inference runs.

``auto`` picks CUDA, then Apple's MPS, then the CPU. The CPU runs in float32; CUDA runs under
autocast (bfloat16 where the GPU supports it, float16 otherwise) with channels_last tensors
(:class:`~napari_m2mrf.inference.runner.ModelRunner` applies both).
"""

from __future__ import annotations

import logging
import re

import torch

from napari_m2mrf.errors import UserError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The device names usable on this machine, best first (``cuda:N`` for each GPU, then mps, cpu)."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names + ["cpu"]


def choose_device(name: str = "auto") -> torch.device:
    """The torch device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``).

    Raises ``UserError`` when the named device does not exist here.
    """
    if name == "auto":
        device = torch.device(available_devices()[0])
        logger.info("device auto: %s", device)
        return device
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise UserError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"device {name!r} is not available here; available: {', '.join(available_devices())}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device 'mps' is not available here; available: {', '.join(available_devices())}")
    return device


def describe_device(name: str) -> str:
    """What runs on device ``name`` (``auto`` resolved), in the words the widgets show: the GPU's
    model and the precision it computes in, or the CPU and its thread count."""
    device = choose_device(name)
    if device.type == "cuda":
        dtype = autocast_dtype(device)
        precision = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
        return f"{device} ({torch.cuda.get_device_name(device)}, {precision})"
    if device.type == "mps":
        return "mps (Apple GPU, float32)"
    return f"cpu ({torch.get_num_threads()} threads, float32)"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype used on ``device``: None (float32) on CPU and MPS, bf16 or fp16 on CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
