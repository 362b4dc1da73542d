"""Shared by the slide tests: a small synthetic slide and a randomly initialised slide checkpoint.

Until the trainer ships a bundled slide model, tests build one: an HRNetV2-W18-small behind the
paper's deformation module and deformed sampler, with the sample slide's classes (softmax,
background first), saved in the deformed-checkpoint format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_m2mrf.models import build_model
from napari_m2mrf.models.deform import DeformedSampler, DeformedSegmenter
from napari_m2mrf.models.deformed_checkpoints import save_deformed_checkpoint
from sample_data.slide import SLIDE_CLASSES, SampleSlide, generate_slide

SMALL_SLIDE = 2048


def slide_classes_meta() -> list[dict]:
    """Checkpoint class entries: background, then the sample slide's classes."""
    background = {"label": 0, "code": "BG", "name": "background", "color": [0.0, 0.0, 0.0, 0.0]}
    return [background] + [
        {"label": label, "code": name, "name": name, "color": list(color)} for label, (name, color) in SLIDE_CLASSES.items()
    ]


def save_slide_model(
    path: Path, output_size: tuple[int, int] = (64, 64), density_size: tuple[int, int] = (32, 32), seed: int = 0
) -> Path:
    """A random-weight deformed slide model (HRNetV2-W18-small) saved at ``path``."""
    torch.manual_seed(seed)
    seg_net = build_model("hrnetv2_w18s", num_classes=len(SLIDE_CLASSES) + 1)
    model = DeformedSegmenter(seg_net, output_size, density_size, DeformedSampler(sigma=4.0))
    meta = {
        "classes": slide_classes_meta(),
        "normalization": {"mean": [180.0, 140.0, 170.0], "std": [40.0, 45.0, 35.0]},
        "input_size": list(output_size),
        "output": "softmax",
        "provenance": {"weights": "random (tests)"},
    }
    save_deformed_checkpoint(path, model, meta)
    return path


def small_slide(folder: Path) -> SampleSlide:
    """The synthetic slide at 2048² (3 levels) written into ``folder``."""
    return generate_slide(folder, size=SMALL_SLIDE)
