"""Validation under the official M2MRF test protocol: AUPR and IoU per lesion over a set of images.

Each image is fitted (keep ratio) into the training ``resize`` box, segmented whole in one pass,
its logits resized back to the original resolution (bilinear, align_corners=False) and turned into
probabilities (sigmoid per lesion; softmax without the background channel for multi-class
models), then streamed into ``napari_m2mrf.metrics.LesionMetrics`` with the full-resolution
masks (dataset-level 11-threshold AUPR, dense AUPR, IoU at 0.5). Images are normalised and logits
become probabilities exactly as in inference (``napari_m2mrf.models.preprocess``,
``napari_m2mrf.models.outputs``); the model runs on the trainer's device in float32, untiled (the
model being trained, not through inference's runner). A barely trained network can overflow in eval
mode (BatchNorm running statistics still near their initial values); by the one NaN policy of
``napari_m2mrf.models.outputs`` a NaN logit gives probability 0 (no lesion), so the scores stay
defined and say how poor it is.

A deformed-downsampling model is scored at its input resolution (the fitted image): its
low-resolution probabilities are put back by the reverse sampler (nearest sample, Jin et al.'s
Π∘G⁻¹) and compared with the fitted masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_m2mrf.classes import LesionClass
from napari_m2mrf.metrics import LesionMetrics
from napari_m2mrf.models.deform import DeformedOutput, grid_to_pixels
from napari_m2mrf.models.outputs import SIGMOID, SOFTMAX, probabilities
from napari_m2mrf.sampling.reverse import ReverseSampler
from training.datasets import SampleRecord, load_sample, to_tensors
from training.slide_samples import SlideRecord
from training.transforms import ResizeToFit


@torch.no_grad()
def evaluate(
    model: nn.Module,
    records: Sequence[SampleRecord | SlideRecord],
    classes: Sequence[LesionClass],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    fit_box: Sequence[int],
    multilabel: bool,
    device: torch.device,
) -> dict[str, Any]:
    """``LesionMetrics.compute()`` of ``model`` over ``records``; the model is left in train mode."""
    metrics = LesionMetrics(tuple(classes))
    model.eval()
    try:
        for record in records:
            sample = load_sample(record, classes, multilabel=True)
            fitted = ResizeToFit(fit_box)(sample, np.random.default_rng(0)) if fit_box else sample
            image, _ = to_tensors(fitted, mean, std)
            output = model(image[None].to(device))
            if isinstance(output, DeformedOutput):
                metrics.update(reverse_sampled(output, fitted.image.shape[:2], multilabel), fitted.target)
                continue
            logits = F.interpolate(output.float(), size=sample.image.shape[:2], mode="bilinear", align_corners=False)
            metrics.update(class_probabilities(logits[0], multilabel), sample.target)
    finally:
        model.train()
    return metrics.compute()


def class_probabilities(logits: torch.Tensor, multilabel: bool) -> np.ndarray:
    """(K, H, W) probabilities in [0, 1] from logits (K, H, W) (sigmoid) or (K + 1, H, W)
    (softmax, background channel 0 dropped), by ``napari_m2mrf.models.outputs.probabilities``."""
    result = probabilities(logits, SIGMOID if multilabel else SOFTMAX, dim=0)
    return (result if multilabel else result[1:]).cpu().numpy()


def reverse_sampled(output: DeformedOutput, size: tuple[int, int], multilabel: bool) -> np.ndarray:
    """The low-resolution probabilities of a deformed model put back on the ``size`` input grid:
    every pixel takes the value of its nearest sample (Jin et al.'s Π∘G⁻¹), (K, H, W)."""
    probabilities = class_probabilities(output.logits[0].float(), multilabel)
    points = grid_to_pixels(output.grid[0].float(), size).cpu().numpy()
    return ReverseSampler(points, probabilities).fill(slice(0, size[0]), slice(0, size[1]))
