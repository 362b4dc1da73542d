"""HRNetV2 backbones whose fuse layers and new-branch transitions take their resampling operators by name.

Layout and module names follow the standard HRNet definition (mmseg 0.x ``HRNet``) so that the
official checkpoints map onto it: a stride-4 stem (``conv1, bn1, conv2, bn2``), stage 1
(``layer1``: bottlenecks, 64 → 256 channels), then stages 2-4 (``stage2..4``: high-resolution
modules with 2, 3, 4 parallel branches at strides 4, 8, 16, 32) joined by ``transition1..3``.

Downsampling operators (``downsample=``): ``"conv"`` (t × 3×3 stride-2 conv, vanilla HRNetV2),
``"m2mrf"`` (one M2MRF with δ = 1/2^t, "one-step"), ``"m2mrf_cascade"`` (t × M2MRF with δ = 1/2).
Upsampling operators (``upsample=``), applied after the 1×1 channel reduction: ``"bilinear"``
(vanilla), ``"m2mrf"`` (one M2MRF with δ = 2^t), ``"m2mrf_cascade"`` (t × M2MRF with δ = 2).
With an M2MRF downsampling operator the transitions that open a new branch use M2MRF(δ = 1/2) too,
as in the official code. Branch sizes then follow M2MRF's floor rounding (239 → 119) instead of the
stride-2 conv's ceiling (239 → 120); every upsampled term is resized to its target branch's exact size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from napari_m2mrf.models.m2mrf import M2MRF

DOWNSAMPLE_OPS = ("conv", "m2mrf", "m2mrf_cascade")
UPSAMPLE_OPS = ("bilinear", "m2mrf", "m2mrf_cascade")


@dataclass(frozen=True)
class M2MRFConfig:
    """Hyper-parameters of every M2MRF in a network (paper defaults S=8, r=4, α=64)."""

    patch_size: int = 8
    compress_rate: int = 4
    alpha: int = 64
    groups: int = 1

    def build(self, in_channels: int, out_channels: int, scale: float) -> M2MRF:
        return M2MRF(in_channels, out_channels, scale, self.patch_size, self.compress_rate, self.alpha, self.groups)


@dataclass(frozen=True)
class StageConfig:
    """One HRNet stage: ``num_modules`` high-resolution modules, per-branch block counts and widths."""

    num_modules: int
    num_blocks: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class HRNetConfig:
    """A whole HRNet: bottlenecks in stage 1, then stages 2, 3, 4."""

    stage1_blocks: int
    stages: tuple[StageConfig, StageConfig, StageConfig]

    @property
    def out_channels(self) -> tuple[int, ...]:
        return self.stages[-1].channels


def _standard(width: int, modules: tuple[int, int, int], blocks: int, stage1_blocks: int) -> HRNetConfig:
    """Branch widths ``width·2^b``; stage ``s`` (2-4) has ``modules[s-2]`` modules of ``blocks`` blocks per branch."""
    widths = tuple(width * 2**b for b in range(4))
    stage2, stage3, stage4 = (StageConfig(modules[s], (blocks,) * (s + 2), widths[: s + 2]) for s in range(3))
    return HRNetConfig(stage1_blocks=stage1_blocks, stages=(stage2, stage3, stage4))


HRNET_CONFIGS: dict[str, HRNetConfig] = {
    "w18s": _standard(18, modules=(1, 3, 2), blocks=2, stage1_blocks=2),  # HRNetV2-W18-Small (v2)
    "w18": _standard(18, modules=(1, 4, 3), blocks=4, stage1_blocks=4),
    "w32": _standard(32, modules=(1, 4, 3), blocks=4, stage1_blocks=4),
    "w48": _standard(48, modules=(1, 4, 3), blocks=4, stage1_blocks=4),
}


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN with a residual connection; ``N×C×H×W`` → ``N×C_out×H×W``."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, channels * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 conv-BN with a residual connection, output ``4·channels`` wide."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, channels * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _projection(in_channels: int, out_channels: int) -> nn.Sequential | None:
    """1×1 conv-BN on the residual path when the block changes the width, else ``None``."""
    if in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


def downsample_path(in_channels: int, out_channels: int, steps: int, op: str, m2mrf: M2MRFConfig) -> nn.Sequential:
    """Fuse path from a branch ``2^steps`` times finer: ``N×C_in×H×W`` → ``N×C_out×~H/2^t×~W/2^t``.

    A ``Sequential`` of steps, each ``Sequential(resampler, BN[, ReLU])``; only the last step changes
    the width and it has no ReLU (the fused sum is rectified later).
    """
    if op == "m2mrf":
        return nn.Sequential(nn.Sequential(m2mrf.build(in_channels, out_channels, 0.5**steps), nn.BatchNorm2d(out_channels)))
    layers = []
    for step in range(steps):
        last = step == steps - 1
        width = out_channels if last else in_channels
        resampler = _conv3x3(in_channels, width, stride=2) if op == "conv" else m2mrf.build(in_channels, width, 0.5)
        modules = [resampler, nn.BatchNorm2d(width)] + ([] if last else [nn.ReLU(inplace=True)])
        layers.append(nn.Sequential(*modules))
    return nn.Sequential(*layers)


def upsample_path(in_channels: int, out_channels: int, steps: int, op: str, m2mrf: M2MRFConfig) -> nn.Sequential:
    """Fuse path from a branch ``2^steps`` times coarser: 1×1 conv-BN to ``C_out``, then ×2^steps."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
    if op == "bilinear":
        layers.append(nn.Upsample(scale_factor=2**steps, mode="bilinear", align_corners=False))
    elif op == "m2mrf":
        layers.append(m2mrf.build(out_channels, out_channels, 2.0**steps))
    else:
        layers.extend(m2mrf.build(out_channels, out_channels, 2.0) for _ in range(steps))
    return nn.Sequential(*layers)


def new_branch_transition(in_channels: int, out_channels: int, op: str, m2mrf: M2MRFConfig) -> nn.Sequential:
    """Opens a branch at half the resolution of the coarsest one: resampler-BN-ReLU."""
    resampler = _conv3x3(in_channels, out_channels, stride=2) if op == "conv" else m2mrf.build(in_channels, out_channels, 0.5)
    return nn.Sequential(nn.Sequential(resampler, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)))


class HighResolutionModule(nn.Module):
    """Parallel residual branches followed by all-to-all fusion (every branch gets every other one)."""

    def __init__(
        self,
        channels: Sequence[int],
        num_blocks: Sequence[int],
        downsample: str,
        upsample: str,
        m2mrf: M2MRFConfig,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(width, width) for _ in range(blocks))) for width, blocks in zip(channels, num_blocks)
        )
        self.fuse_layers = nn.ModuleList()
        for i, target in enumerate(channels):
            paths = nn.ModuleList()
            for j, source in enumerate(channels):
                if j > i:
                    paths.append(upsample_path(source, target, j - i, upsample, m2mrf))
                elif j < i:
                    paths.append(downsample_path(source, target, i - j, downsample, m2mrf))
                else:
                    paths.append(nn.Identity())
            self.fuse_layers.append(paths)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """``features[i]``: ``N×C_i×H_i×W_i`` → same shapes."""
        features = [branch(x) for branch, x in zip(self.branches, features)]
        fused = []
        for i, paths in enumerate(self.fuse_layers):
            size = features[i].shape[-2:]
            total = None
            for j, path in enumerate(paths):
                term = path(features[j])
                if j > i and term.shape[-2:] != size:
                    term = F.interpolate(term, size=size, mode="bilinear", align_corners=False)
                total = term if total is None else total + term
            fused.append(self.relu(total))
        return fused


class HRNet(nn.Module):
    """HRNetV2 backbone: ``N×3×H×W`` → four maps at strides 4, 8, 16, 32 (widths ``config.out_channels``).

    Args:
        config: stage layout, e.g. ``HRNET_CONFIGS["w48"]``.
        downsample: one of :data:`DOWNSAMPLE_OPS` for the fuse layers and new-branch transitions.
        upsample: one of :data:`UPSAMPLE_OPS` for the fuse layers.
        m2mrf: hyper-parameters of the M2MRF operators (unused for conv/bilinear).
    """

    def __init__(
        self,
        config: HRNetConfig,
        downsample: str = "conv",
        upsample: str = "bilinear",
        m2mrf: M2MRFConfig = M2MRFConfig(),
    ) -> None:
        super().__init__()
        if downsample not in DOWNSAMPLE_OPS:
            raise ValueError(f"unknown downsampling operator {downsample!r}; valid: {', '.join(DOWNSAMPLE_OPS)}")
        if upsample not in UPSAMPLE_OPS:
            raise ValueError(f"unknown upsampling operator {upsample!r}; valid: {', '.join(UPSAMPLE_OPS)}")
        self.config = config
        self.conv1 = _conv3x3(3, 64, stride=2)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = _conv3x3(64, 64, stride=2)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(
            *(Bottleneck(64 if b == 0 else 64 * Bottleneck.expansion, 64) for b in range(config.stage1_blocks))
        )
        previous: tuple[int, ...] = (64 * Bottleneck.expansion,)
        for index, stage in enumerate(config.stages, start=1):
            transition = nn.ModuleList()
            for branch, width in enumerate(stage.channels):
                if branch >= len(previous):
                    transition.append(new_branch_transition(previous[-1], width, downsample, m2mrf))
                elif previous[branch] != width:
                    transition.append(
                        nn.Sequential(_conv3x3(previous[branch], width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
                    )
                else:
                    transition.append(nn.Identity())
            self.add_module(f"transition{index}", transition)
            modules = (
                HighResolutionModule(stage.channels, stage.num_blocks, downsample, upsample, m2mrf)
                for _ in range(stage.num_modules)
            )
            self.add_module(f"stage{index + 1}", nn.Sequential(*modules))
            previous = stage.channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan-out, ReLU), unit BN scales, then each M2MRF's own initialisation."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, M2MRF):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: ``N×3×H×W`` → ``[N×C_b×H_b×W_b for b in 0..3]``, ``H_0 = ⌈⌈H/2⌉/2⌉``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        features = [self.layer1(x)]
        for index in range(1, 4):
            transition = getattr(self, f"transition{index}")
            features = [
                layer(features[branch] if branch < len(features) else features[-1])
                for branch, layer in enumerate(transition)
            ]
            features = getattr(self, f"stage{index + 1}")(features)
        return features
