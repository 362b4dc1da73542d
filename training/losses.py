"""Segmentation losses: the official M2MRF binary Dice, binary cross-entropy, their sum, softmax
cross-entropy and the focal loss of Jin et al.

Multi-label losses (``dice``, ``bce``, ``dice_bce``) take logits (N, K, H, W), one sigmoid output per lesion,
and binary targets (N, K, H, W). Multi-class losses (``cross_entropy``, ``focal``) take logits
(N, K + 1, H, W) with background as channel 0 and targets (N, 1, H, W) of class indices. Logits
of another size are first resized to the target bilinearly (align_corners=False), as the official
decode head does. Losses are computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.config import MULTILABEL_LOSSES, LossConfig


def _match_size(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return logits.float()


def binary_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Official M2MRF Dice loss: ``p = sigmoid(logits)``, per sample and class
    ``1 - (2 Σ p·g + smooth) / (Σ p + Σ g + smooth)`` over the pixels, summed over the K classes and
    divided by K, then averaged over the batch. Returns a scalar."""
    probabilities = torch.sigmoid(_match_size(logits, target.shape[-2:]))
    truth = target.float()
    overlap = (probabilities * truth).sum(dim=(2, 3))
    total = probabilities.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))
    dice = (2 * overlap + smooth) / (total + smooth)
    return (1 - dice).sum(dim=1).div(dice.shape[1]).mean()


def binary_cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sigmoid binary cross-entropy averaged over every pixel, class and sample."""
    return F.binary_cross_entropy_with_logits(_match_size(logits, target.shape[-2:]), target.float())


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy averaged over pixels; ``target`` (N, 1, H, W) class indices."""
    return F.cross_entropy(_match_size(logits, target.shape[-2:]), target[:, 0].long())


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss (Lin et al. 2017, no class weighting α) averaged over pixels:
    ``-(1 - p_t)^gamma · log p_t`` with ``p_t`` the probability of the true class; ``gamma = 0``
    is the cross-entropy."""
    log_probabilities = F.log_softmax(_match_size(logits, target.shape[-2:]), dim=1)
    log_true = log_probabilities.gather(1, target.long()).squeeze(1)
    return (-((1 - log_true.exp()) ** gamma) * log_true).mean()


class SegmentationLoss:
    """The configured loss: ``loss(logits, target) -> {"loss": total, <name>: term}`` (scalars)."""

    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self.multilabel = config.name in MULTILABEL_LOSSES

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        name = self.config.name
        if name == "dice":
            value = binary_dice_loss(logits, target, self.config.smooth)
        elif name == "bce":
            value = binary_cross_entropy_loss(logits, target)
        elif name == "dice_bce":
            dice = binary_dice_loss(logits, target, self.config.smooth)
            cross_entropy = binary_cross_entropy_loss(logits, target)
            value = dice + self.config.bce_weight * cross_entropy
            return {"loss": value, "dice": dice.detach(), "bce": cross_entropy.detach()}
        elif name == "cross_entropy":
            value = cross_entropy_loss(logits, target)
        else:
            value = focal_loss(logits, target, self.config.focal_gamma)
        return {"loss": value, name: value.detach()}
