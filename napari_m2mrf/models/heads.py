"""The FCN head of the official lesion model and the backbone + head segmenter around it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class FCNHead(nn.Module):
    """All branches resized (bilinear) to the finest one and concatenated, 1×1 conv-BN-ReLU, 1×1 classifier.

    ``[N×C_b×H_b×W_b]`` → ``N×K×H_0×W_0`` logits (``K = num_classes``), as mmseg's ``FCNHead`` with
    ``input_transform='resize_concat'``, ``num_convs=1``, ``kernel_size=1``, no dropout.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        width = sum(in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming fuse conv, unit BN, classifier N(0, 0.01) with zero bias (official initialisation)."""
        nn.init.kaiming_normal_(self.fuse[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.fuse[1].weight)
        nn.init.zeros_(self.fuse[1].bias)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        resized = [features[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
        ]
        return self.classifier(self.fuse(torch.cat(resized, dim=1)))


class Segmenter(nn.Module):
    """Backbone + head; ``forward``: ``N×3×H×W`` normalised image → ``N×K×H×W`` logits.

    The head's logits (at the backbone's finest stride) are resized to the input with bilinear
    interpolation (``align_corners=False``). Fundus models have one sigmoid output per lesion:
    channel ``k`` is label ``k + 1`` of :data:`napari_m2mrf.classes.FUNDUS_CLASSES`.

    ``build_config`` holds the registry name and keyword arguments that rebuild the model
    (``{"arch": name, **cfg}``); checkpoints store it.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, build_config: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.build_config = dict(build_config)

    @property
    def num_classes(self) -> int:
        return int(self.build_config["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
