"""Image preparation shared by inference and training: keep-ratio sizes and the one normalisation.

:func:`to_normalised_tensor` is the only normalisation in the project: the fundus and slide jobs
(:mod:`napari_m2mrf.inference`) and the trainer's samples (``training.datasets.to_tensors``) all
call it, so a model sees the same numbers in training and in use.

Follows the official M2MRF pipeline: the keep-ratio rescale of mmcv (``img_scale`` given as a
long/short edge pair, e.g. 1440×960 for IDRiD, so 4288×2848 becomes 1440×956), bilinear resampling
without antialiasing, and per-channel RGB normalisation on the 0–255 scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def keep_ratio_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """(H, W) after the official keep-ratio rescale to fit ``scale`` = (long edge, short edge) in pixels."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def to_normalised_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) RGB on the 0–255 scale (uint8, or float such as a slide's bilinear samples) →
    (1, 3, H, W) float32, ``(pixel - mean) / std`` per channel."""
    tensor = torch.from_numpy(np.require(image[..., :3], requirements=["C", "W"])).permute(2, 0, 1).float()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((tensor - mean_t) / std_t).unsqueeze(0)


def resize_bilinear(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) → (N, C, *size), bilinear with align_corners=False (no-op when the size matches)."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
