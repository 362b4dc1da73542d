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
from napari_m2mrf.models.checkpoints import save_deformed_checkpoint
from sample_data.slide_sample import SLIDE_CLASSES, SampleSlide, generate_slide

SMALL_SLIDE = 2048


def slide_classes_meta() -> list[dict]:
    """Checkpoint class entries: background, then the sample slide's classes."""
    background = {"label": 0, "code": "BG", "name": "background", "color": [0.0, 0.0, 0.0, 0.0]}
    return [background] + [
        {"label": label, "code": name, "name": name, "color": list(color)} for label, (name, color) in SLIDE_CLASSES.items()
    ]


def save_slide_model(
    path: Path,
    output_size: tuple[int, int] = (64, 64),
    density_size: tuple[int, int] = (32, 32),
    seed: int = 0,
    output: str = "softmax",
    thresholds: dict[str, float] | None = None,
    constant_logits: list[float] | None = None,
    training_scale: dict | None = None,
) -> Path:
    """A random-weight deformed slide model (HRNetV2-W18-small) saved at ``path``.

    ``output="softmax"``: background and the slide's classes; ``"sigmoid"``: one channel per class
    (multi-label), with calibrated ``thresholds`` per class code in the metadata if given.
    ``constant_logits``: the classifier outputs these logits everywhere (weights zero, these biases).
    ``training_scale``: the metadata entry of :mod:`napari_m2mrf.models.training_scale` (none if None).
    """
    torch.manual_seed(seed)
    classes = slide_classes_meta() if output == "softmax" else slide_classes_meta()[1:]
    seg_net = build_model("hrnetv2_w18s", num_classes=len(classes))
    if constant_logits is not None:
        with torch.no_grad():
            seg_net.head.classifier.weight.zero_()
            seg_net.head.classifier.bias.copy_(torch.tensor(constant_logits))
    model = DeformedSegmenter(seg_net, output_size, density_size, DeformedSampler(sigma=4.0))
    meta = {
        "classes": classes,
        "normalization": {"mean": [180.0, 140.0, 170.0], "std": [40.0, 45.0, 35.0]},
        "input_size": list(output_size),
        "output": output,
        "provenance": {"weights": "random (tests)"},
    }
    if thresholds is not None:
        meta["thresholds"] = thresholds
    if training_scale is not None:
        meta["training_scale"] = training_scale
    save_deformed_checkpoint(path, model, meta)
    return path


def small_slide(folder: Path) -> SampleSlide:
    """The synthetic slide at 2048² (3 levels) written into ``folder``."""
    return generate_slide(folder, size=SMALL_SLIDE)
