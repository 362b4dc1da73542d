"""Validation under the official M2MRF test protocol: AUPR and IoU per lesion over a set of images.

Each image is fitted (keep ratio) into the training ``resize`` box, segmented whole in one pass,
its logits resized back to the original resolution (bilinear, align_corners=False) and turned into
probabilities (sigmoid per lesion; softmax without the background channel for multi-class
models), then streamed into ``napari_m2mrf.metrics.LesionMetrics`` with the full-resolution
masks (dataset-level 11-threshold AUPR, dense AUPR, IoU at 0.5). A barely trained network can
overflow in eval mode (BatchNorm running statistics still near their initial values); its NaN
probabilities count as 0 (no lesion) so the scores stay defined and say how poor it is.
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
from training.datasets import SampleRecord, load_sample, to_tensors
from training.transforms import ResizeToFit


@torch.no_grad()
def evaluate(
    model: nn.Module,
    records: Sequence[SampleRecord],
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
            logits = model(image[None].to(device)).float()
            logits = F.interpolate(logits, size=sample.image.shape[:2], mode="bilinear", align_corners=False)
            probabilities = torch.sigmoid(logits[0]) if multilabel else torch.softmax(logits[0], dim=0)[1:]
            metrics.update(torch.nan_to_num(probabilities, nan=0.0).cpu().numpy(), sample.target)
    finally:
        model.train()
    return metrics.compute()
