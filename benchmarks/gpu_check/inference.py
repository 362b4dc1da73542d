"""Stage ``inference``: images/s of HRNetV2-W48 and M2MRF-HRNetV2-W48 variants A–D.

Batch ``1×3×960×1440`` (IDRiD's official 1440×960), float32 and bf16 autocast (fp16 where bf16 is
missing), channels_last on CUDA, ``inference_mode``: warm-up, then rounds that run every model once
in turn, each forward timed between device synchronisations; the figure is the median; the ratio is
the variant's median seconds over vanilla's (1.10 = 10 % slower). Tiny mode uses the W18-Small
models.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .device import autocast_dtype, synchronize
from .settings import Settings

LOG = logging.getLogger("gpu_check")

# label -> (registry name, build options); "vanilla" is the reference of the time ratios
W48_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "vanilla": ("hrnetv2_w48", {}),
    **{v: ("m2mrf_hrnetv2_w48", {"variant": v}) for v in "ABCD"},
}
TINY_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "vanilla": ("hrnetv2_w18s", {}),
    **{v: ("m2mrf_hrnetv2_w18s", {"variant": v}) for v in "ABCD"},
}


def stage_inference(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Images/s per model and precision (batch 1, median of timed forwards), ratio to vanilla."""
    from napari_m2mrf.models import build_model

    device = settings.device
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    catalogue = TINY_MODELS if settings.tiny else W48_MODELS
    memory_format = torch.channels_last if device.startswith("cuda") else torch.contiguous_format
    models = {
        label: build_model(name, num_classes=4, **cfg).eval().to(device=device, memory_format=memory_format)
        for label, (name, cfg) in catalogue.items()
    }
    height, width = settings.inference_size
    x = torch.randn(1, 3, height, width, device=device).contiguous(memory_format=memory_format)
    precisions = {"fp32": None, "autocast": autocast_dtype(device)}
    figures: dict[str, float] = {}
    results: dict[str, Any] = {
        "input": [1, 3, height, width],
        "models": {k: v[0] + (f" {v[1]['variant']}" if v[1] else "") for k, v in catalogue.items()},
        "autocast_dtype": str(precisions["autocast"]).replace("torch.", ""), "channels_last": device.startswith("cuda"),
        "cudnn_benchmark": True, "per_precision": {},
    }
    # Each precision gets an equal share of the time left; rounds stop early at that share.
    for index, (precision, dtype) in enumerate(precisions.items()):
        share_end = time.time() + (deadline - time.time()) / (len(precisions) - index)
        times = _time_forwards(models, x, device, dtype, settings, share_end)
        medians = {label: statistics.median(values) for label, values in times.items()}
        table = {}
        for label, median in medians.items():
            ratio = median / medians["vanilla"]
            table[label] = {"images_per_s": 1.0 / median, "median_s": median, "time_ratio_to_vanilla": ratio,
                            "within_10_percent": ratio <= 1.10, "rounds": len(times[label])}
            figures[f"{precision}.{label}.images_per_s"] = round(1.0 / median, 3)
            if label != "vanilla":
                figures[f"{precision}.{label}.time_ratio_to_vanilla"] = round(ratio, 4)
            LOG.info("inference %-8s %-7s %8.2f images/s  time vs vanilla %.3f", precision, label, 1 / median, ratio)
        results["per_precision"][precision] = table
    return {"figures": figures, "results": results}


def _time_forwards(models: dict[str, nn.Module], x: torch.Tensor, device: str, dtype: torch.dtype | None,
                   settings: Settings, share_end: float) -> dict[str, list[float]]:
    """Seconds of each model's forwards of ``x`` ``(1, 3, H, W)`` under autocast ``dtype`` (None:
    float32), after the warm-up; rounds stop at ``share_end`` (epoch seconds) once there are three."""
    times: dict[str, list[float]] = {label: [] for label in models}
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype or torch.float32,
                                                 enabled=dtype is not None):
        for model in models.values():
            for _ in range(settings.inference_warmup):
                model(x)
        synchronize(device)
        for _ in range(settings.inference_rounds):
            for label, model in models.items():
                synchronize(device)
                start = time.perf_counter()
                model(x)
                synchronize(device)
                times[label].append(time.perf_counter() - start)
            if time.time() > share_end and len(times["vanilla"]) >= 3:
                break
    return times
