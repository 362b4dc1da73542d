"""Stage ``training``: iterations/s and peak memory of M2MRF-HRNetV2-W48-A training steps.

Batch ``4×3×960×1440`` random images with sparse random targets, binary Dice, SGD momentum
(``training.schedules`` defaults), bf16 autocast on CUDA (no gradient scaler needed; fp16 with a
GradScaler where bf16 is missing); the figure is the median step after two warm-up steps, and the
peak is ``torch.cuda.max_memory_allocated`` over the steps. A CPU (tiny) run trains the W18-Small
model in float32, as bf16 on most CPUs is emulated and many times slower.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .device import autocast_dtype, peak_memory_bytes
from .settings import Settings
from .train_step import TimedTrainingStep

LOG = logging.getLogger("gpu_check")


def stage_training(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Median seconds per training step until ``deadline`` (epoch seconds), and the peak memory."""
    from napari_m2mrf.models import build_model
    from training.config import LossConfig, OptimConfig
    from training.losses import SegmentationLoss
    from training.schedules import build_optimizer

    device = settings.device
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    name = "m2mrf_hrnetv2_w18s" if settings.tiny else "m2mrf_hrnetv2_w48"
    model = build_model(name, num_classes=4, variant="A").to(device).train()
    batch = settings.training_batch
    height, width = settings.training_size
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, height, width, generator=generator).to(device)
    targets = (torch.rand(batch, 4, height, width, generator=generator) > 0.99).to(torch.uint8).to(device)
    dtype = autocast_dtype(device) if device.startswith("cuda") else None
    step = TimedTrainingStep(model, build_optimizer(model.parameters(), OptimConfig()),
                             SegmentationLoss(LossConfig(name="dice")), images, targets, device, dtype)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def finite_step() -> float:
        seconds = step()
        if not torch.isfinite(step.loss):
            raise RuntimeError("training loss is not finite")
        return seconds

    warmup = [finite_step() for _ in range(2)]
    times: list[float] = []
    for _ in range(settings.training_steps):
        times.append(finite_step())
        if time.time() > deadline - 2 * max(times) and len(times) >= 3:
            break
    median = statistics.median(times)
    peak, source = peak_memory_bytes(device)
    LOG.info("training %s batch %d %dx%d: %.3f it/s, peak %.2f GiB (%s)", name, batch, height, width, 1 / median,
             peak / 2**30, source)
    return {
        "figures": {"iterations_per_s": round(1 / median, 4), "seconds_per_iteration": round(median, 4),
                    "peak_memory_gib": round(peak / 2**30, 3)},
        "results": {"model": f"{name} variant A", "input": [batch, 3, height, width],
                    "autocast_dtype": str(dtype).replace("torch.", "") if dtype else "none (float32)",
                    "grad_scaler": step.scaler is not None,
                    "optimizer": "SGD momentum 0.9 (training.schedules defaults)", "loss": "binary Dice",
                    "warmup_s": [round(t, 4) for t in warmup], "step_s": [round(t, 4) for t in times],
                    "peak_memory_source": source, "peak_memory_bytes": peak},
    }
