"""The M2MRF operator: many-to-many reassembly of features (Liu et al. 2022, §3.2, eqs. 3-6).

A feature map ``N×C×H×W`` is resampled by ``δ = 2^±t``:

1. zero-pad bottom/right to a multiple of the patch size ``S`` (the official code pads *before* the
   compressor, so padded pixels carry the compressor bias; kept so official checkpoints reproduce
   official numerics),
2. channel compressor: 1×1 conv ``C → e`` with ``e = int(C / r)``,
3. cut into ``S×S`` patches (stride = patch size, so this is a reshape),
4. per patch two linear layers without a nonlinearity between them,
   ``S²·e → f → (δS)²·e`` with ``f = int(S²·e / α)`` (optionally grouped),
5. reassemble the ``δS×δS`` output patches (a reshape),
6. crop to ``max(⌊δH⌋, 1) × max(⌊δW⌋, 1)`` (downsampling floors: 15 → 7),
7. channel recover: 1×1 conv ``e → C_out``.

Flattened patch vectors are ordered channel-major ``(channel, row, column)`` like ``nn.Unfold``; the
official weights are stored in that order.

Speed: every step is linear, so the compressor is folded into the first patch projection and the
channel recover into the second whenever that costs fewer multiply-adds (always, for the defaults
``S=8, α=64``, where ``f ≤ e``). The operator then is pad → reshape → two matmuls → reshape, with no
``e``-channel intermediate maps and no Unfold/Fold copies; the folded weights are recomputed from
the parameters on every call (differentiable, and cheap next to the matmuls), so training and
inference share one exact code path. Input in ``channels_last`` memory gives ``channels_last`` output
and keeps the patch copies contiguous along channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchLinear(nn.Module):
    """A (grouped) linear layer applied to every flattened patch, ``B×in → B×out``.

    Same parameter shapes as a kernel-1 ``Conv1d`` minus the trailing 1: ``weight`` is
    ``out × in/groups``, ``bias`` is ``out``. Groups split the input and output vectors into
    ``groups`` contiguous blocks, block ``g`` of the output seeing only block ``g`` of the input.
    """

    def __init__(self, in_features: int, out_features: int, groups: int = 1) -> None:
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(f"groups={groups} must divide in_features={in_features} and out_features={out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_features, in_features // groups))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weight (as the official M2MRF code), zero bias."""
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ungrouped weight, ``out × in`` (block diagonal when ``groups > 1``)."""
        if self.groups == 1:
            return self.weight
        return torch.block_diag(*self.weight.chunk(self.groups, dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×in`` → ``B×out``."""
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        g = self.groups
        blocks = x.view(x.shape[0], g, self.in_features // g)
        weight = self.weight.view(g, self.out_features // g, self.in_features // g)
        return torch.einsum("bgi,goi->bgo", blocks, weight).reshape(x.shape[0], self.out_features) + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}"


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _cut_patches(x: torch.Tensor, size: int, channels_last: bool) -> torch.Tensor:
    """``N×C×H×W`` (H, W multiples of ``size``) → ``(N·H/size·W/size)×(C·size²)`` patch vectors.

    Rows run over patches in ``(n, block row, block column)`` order. The vector order is
    ``(channel, row, column)``, or ``(row, column, channel)`` when ``channels_last``.
    """
    n, c, h, w = x.shape
    hb, wb = h // size, w // size
    if channels_last:
        patches = x.permute(0, 2, 3, 1).reshape(n, hb, size, wb, size, c).permute(0, 1, 3, 2, 4, 5)
    else:
        patches = x.reshape(n, c, hb, size, wb, size).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(n * hb * wb, c * size * size)


def _assemble_patches(
    rows: torch.Tensor, n: int, blocks: tuple[int, int], channels: int, size: int, channels_last: bool
) -> torch.Tensor:
    """Inverse of :func:`_cut_patches`: ``(N·Hb·Wb)×(C·size²)`` → ``N×C×(Hb·size)×(Wb·size)``.

    With ``channels_last`` the result is a ``channels_last`` tensor.
    """
    hb, wb = blocks
    if channels_last:
        grid = rows.view(n, hb, wb, size, size, channels).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(n, hb * size, wb * size, channels).permute(0, 3, 1, 2)
    grid = rows.view(n, hb, wb, channels, size, size).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, channels, hb * size, wb * size)


def _scale_exponent(scale: float) -> int:
    """``t`` such that ``scale == 2**t``; ``ValueError`` for anything else."""
    exponent = round(math.log2(scale)) if scale > 0 else 0
    if scale <= 0 or exponent == 0 or 2.0**exponent != scale:
        raise ValueError(f"M2MRF scale must be 2^t or 2^-t with t >= 1, got {scale}")
    return exponent


class M2MRF(nn.Module):
    """Resample ``N×C_in×H×W`` to ``N×C_out×max(⌊δH⌋,1)×max(⌊δW⌋,1)`` by many-to-many reassembly.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        scale: ``δ = 2^t`` (upsampling) or ``2^-t`` (downsampling); ``δ·S`` must be a whole number.
        patch_size: ``S``, the side of the input patches in pixels (default 8).
        compress_rate: ``r``; the compressor keeps ``e = int(C_in / r)`` channels (default 4).
        alpha: ``α``; the patch bottleneck has ``f = int(S²·e / α)`` features (default 64).
        groups: groups of both patch projections (default 1).

    Parameters (names used by :mod:`napari_m2mrf.models.official` for the official key map):
    ``compressor`` (``e×C_in×1×1`` + bias), ``patch_reduce`` (``f × S²e/groups``),
    ``patch_expand`` (``(δS)²e × f/groups``), ``recover`` (``C_out×e×1×1`` + bias).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: float,
        patch_size: int = 8,
        compress_rate: int = 4,
        alpha: int = 64,
        groups: int = 1,
    ) -> None:
        super().__init__()
        _scale_exponent(scale)
        out_patch = patch_size * scale
        if out_patch < 1 or out_patch != int(out_patch):
            raise ValueError(f"M2MRF scale {scale} needs patch_size * scale to be a whole number, got {out_patch}")
        encoded = int(in_channels / compress_rate)
        bottleneck = int(patch_size * patch_size * encoded / alpha)
        if encoded < 1 or bottleneck < 1:
            raise ValueError(
                f"M2MRF with in_channels={in_channels}, compress_rate={compress_rate}, alpha={alpha}, "
                f"patch_size={patch_size} has no channels left (compressed {encoded}, bottleneck {bottleneck})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = float(scale)
        self.patch_size = patch_size
        self.out_patch_size = int(out_patch)
        self.encoded_channels = encoded
        self.groups = groups

        self.compressor = nn.Conv2d(in_channels, encoded, kernel_size=1)
        self.patch_reduce = PatchLinear(patch_size * patch_size * encoded, bottleneck, groups)
        self.patch_expand = PatchLinear(bottleneck, self.out_patch_size**2 * encoded, groups)
        self.recover = nn.Conv2d(encoded, out_channels, kernel_size=1)
        self.reset_parameters()

        # Fold a 1x1 conv into its neighbouring patch projection when that costs fewer multiply-adds.
        s2, k2, f = patch_size**2, self.out_patch_size**2, bottleneck
        self.fold_compressor = in_channels * s2 * f <= in_channels * encoded * s2 + s2 * encoded * f / groups
        self.fold_recover = f * out_channels * k2 <= f * encoded * k2 / groups + k2 * encoded * out_channels

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases everywhere (the official initialisation)."""
        for conv in (self.compressor, self.recover):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.patch_reduce.reset_parameters()
        self.patch_expand.reset_parameters()

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the output for an ``height×width`` input (official truncation, at least 1)."""
        return max(int(height * self.scale), 1), max(int(width * self.scale), 1)

    def _encoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Compressor folded into ``patch_reduce``: weight ``f×C_in×S²``, bias ``f``."""
        e = self.encoded_channels
        reduce = self.patch_reduce.dense_weight().view(-1, e, self.patch_size**2)
        weight = torch.einsum("fes,ec->fcs", reduce, self.compressor.weight.view(e, self.in_channels))
        bias = self.patch_reduce.bias + torch.einsum("fes,e->f", reduce, self.compressor.bias)
        return weight, bias

    def _decoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``patch_expand`` then the recover conv: weight ``C_out×k²×f``, bias ``C_out×k²`` (``k = δS``)."""
        e = self.encoded_channels
        expand = self.patch_expand.dense_weight().view(e, self.out_patch_size**2, -1)
        recover = self.recover.weight.view(self.out_channels, e)
        weight = torch.einsum("oe,epf->opf", recover, expand)
        bias = torch.einsum("oe,ep->op", recover, self.patch_expand.bias.view(e, -1)) + self.recover.bias[:, None]
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``N×C_in×H×W`` → ``N×C_out×max(⌊δH⌋,1)×max(⌊δW⌋,1)``."""
        n, _, height, width = x.shape
        size, k = self.patch_size, self.out_patch_size
        channels_last = _is_channels_last(x)
        pad_h, pad_w = -height % size, -width % size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        blocks = (x.shape[2] // size, x.shape[3] // size)

        # The folded weights are built in float32 even under autocast; the matmuls then autocast.
        with torch.autocast(x.device.type, enabled=False):
            encoder = self._encoder() if self.fold_compressor else None
            decoder = self._decoder() if self.fold_recover else None

        if encoder is not None:
            weight, bias = encoder
            if channels_last:  # patch vectors are (y, x, c) ordered
                weight = weight.transpose(1, 2)
            bottleneck = F.linear(_cut_patches(x, size, channels_last), weight.flatten(1), bias)
        else:
            bottleneck = self.patch_reduce(_cut_patches(self.compressor(x), size, channels_last=False))

        if decoder is not None:
            weight, bias = decoder
            if channels_last:  # emit (y, x, c) ordered patches that reassemble into channels_last
                weight, bias = weight.transpose(0, 1), bias.t()
            rows = F.linear(bottleneck, weight.flatten(0, 1), bias.flatten())
            out = _assemble_patches(rows, n, blocks, self.out_channels, k, channels_last)
        else:
            patches = _assemble_patches(self.patch_expand(bottleneck), n, blocks, self.encoded_channels, k, False)
            out = self.recover(patches)

        out_h, out_w = self.output_size(height, width)
        return out[:, :, :out_h, :out_w]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, scale={self.scale:g}, patch_size={self.patch_size}, "
            f"encoded={self.encoded_channels}, groups={self.groups}"
        )
