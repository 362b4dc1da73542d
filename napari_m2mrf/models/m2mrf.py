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

Speed (measured in ``benchmarks/bench_m2mrf_operator.py``): patch cutting with the zero padding,
and reassembly with the crop, are each one strided copy (custom autograd functions whose backward
is the other one), not Unfold/Fold plus pad and crop passes; the 1×1 convs are single GEMMs
(:func:`pointwise_conv`); the compressor bias is applied as its response after the first patch
projection, so padding needs no pass of its own. Folding the 1×1 convs into the patch projections,
or the two projections into one matrix, is exact but was measured slower on CPU: the folded
matrices are far larger than the low-rank factors (the bottleneck ``f`` is tiny).
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

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The linear map without the bias: ``B×in`` → ``B×out``."""
        if self.groups == 1:
            return F.linear(x, self.weight)
        g = self.groups
        blocks = x.reshape(x.shape[0], g, self.in_features // g)
        weight = self.weight.view(g, self.out_features // g, self.in_features // g)
        return torch.einsum("bgi,goi->bgo", blocks, weight).reshape(x.shape[0], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×in`` → ``B×out``."""
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        return self.project(x) + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}"


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _axis_pieces(length: int, size: int) -> list[tuple[slice, int, int]]:
    """Split an axis of ``length`` pixels into whole blocks of ``size`` plus one partial block.

    Each piece is ``(pixel slice, number of blocks, pixels per block)``.
    """
    whole, rest = divmod(length, size)
    pieces = [(slice(0, whole * size), whole, size)] if whole else []
    if rest:
        pieces.append((slice(whole * size, length), 1, rest))
    return pieces


def _blocks_view(rows: torch.Tensor, n: int, channels: int, blocks: tuple[int, int], size: int) -> torch.Tensor:
    """``rows`` (``(N·Hb·Wb)×(C·size²)``, rows in ``(n, block row, block column)`` order, each row in
    ``(channel, y, x)`` order) seen as ``N×C×Hb×size×Wb×size`` (a view, no copy)."""
    return rows.view(n, blocks[0], blocks[1], channels, size, size).permute(0, 3, 1, 4, 2, 5)


def _copy_regions(image: torch.Tensor, blocks: torch.Tensor, size: int, into_blocks: bool) -> None:
    """Copy between an ``N×C×H×W`` image and the top-left ``H×W`` of a blocks view, in ≤ 4 strided copies."""
    height, width = image.shape[-2:]
    for rows, row_blocks, row_pixels in _axis_pieces(height, size):
        for cols, col_blocks, col_pixels in _axis_pieces(width, size):
            region = image[:, :, rows, cols].unflatten(2, (row_blocks, row_pixels)).unflatten(4, (col_blocks, col_pixels))
            first_row, first_col = rows.start // size, cols.start // size
            target = blocks[:, :, first_row : first_row + row_blocks, :row_pixels, first_col : first_col + col_blocks, :col_pixels]
            if into_blocks:
                target.copy_(region)
            else:
                region.copy_(target)


def cut_patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """``N×C×H×W`` → ``(N·Hb·Wb)×(C·size²)`` patch vectors, zero-padding bottom/right to whole patches.

    ``Hb = ⌈H/size⌉``; one copy of ``x`` (pad and cut together); differentiable (the gradient is
    :func:`assemble_patches` cropped back to ``H×W``).
    """
    return _CutPatches.apply(x, size, (-(-x.shape[2] // size), -(-x.shape[3] // size)))


def assemble_patches(
    rows: torch.Tensor, n: int, blocks: tuple[int, int], size: int, out_size: tuple[int, int]
) -> torch.Tensor:
    """``(N·Hb·Wb)×(C·size²)`` patches → contiguous ``N×C×H×W`` image cropped to ``out_size``, in one copy."""
    return _AssemblePatches.apply(rows, n, blocks, size, out_size)


class _CutPatches(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, blocks: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        n, c, height, width = x.shape
        shape = (n * blocks[0] * blocks[1], c * size * size)
        padded = height < blocks[0] * size or width < blocks[1] * size
        rows = x.new_zeros(shape) if padded else x.new_empty(shape)
        _copy_regions(x, _blocks_view(rows, n, c, blocks, size), size, into_blocks=True)
        ctx.geometry = (n, blocks, size, (height, width))
        return rows

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return assemble_patches(grad_rows.contiguous(), *ctx.geometry), None, None


class _AssemblePatches(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, rows: torch.Tensor, n: int, blocks: tuple[int, int], size: int, out_size: tuple[int, int]
    ) -> torch.Tensor:
        channels = rows.shape[1] // (size * size)
        image = rows.new_empty((n, channels, *out_size))
        _copy_regions(image, _blocks_view(rows, n, channels, blocks, size), size, into_blocks=False)
        ctx.geometry = (size, blocks)
        return image

    @staticmethod
    def backward(ctx, grad_image: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        size, blocks = ctx.geometry
        return _CutPatches.apply(grad_image, size, blocks), None, None, None, None


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1×1 convolution as one matrix product: ``N×C×H×W`` → ``N×O×H×W`` (``weight``: ``O×C×1×1``).

    Keeps the input's memory format. A plain GEMM whatever the thread count (PyTorch's own CPU 1×1
    conv falls back to a slow unfold path single-threaded).
    """
    n, c, height, width = x.shape
    matrix = weight.view(weight.shape[0], c)
    if _is_channels_last(x):
        return F.linear(x.permute(0, 2, 3, 1), matrix, bias).permute(0, 3, 1, 2)
    flat = x.reshape(n, c, height * width)
    if bias is None:
        out = torch.matmul(matrix, flat)
    else:
        out = torch.baddbmm(bias.view(1, -1, 1).expand(n, -1, 1), matrix.expand(n, -1, -1), flat)
    return out.view(n, -1, height, width)


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

    def _compressor_bias_response(self) -> torch.Tensor:
        """``patch_reduce`` (without its bias) of a patch holding the compressor bias at every pixel, ``f``."""
        bias_patch = self.compressor.bias.repeat_interleave(self.patch_size**2)  # (channel, y, x) order
        return self.patch_reduce.project(bias_patch[None])[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``N×C_in×H×W`` → ``N×C_out×max(⌊δH⌋,1)×max(⌊δW⌋,1)``."""
        n, _, height, width = x.shape
        size = self.patch_size
        blocks = (-(-height // size), -(-width // size))
        # Compressing without the bias, zero-padding, then adding the bias's response to every patch is
        # the same as compressing the zero-padded input (padded pixels carry the bias, as officially).
        encoded = pointwise_conv(x, self.compressor.weight, None)
        patches = cut_patches(encoded, size)
        bottleneck = self.patch_reduce(patches) + self._compressor_bias_response()
        expanded = self.patch_expand(bottleneck)
        out = assemble_patches(expanded, n, blocks, self.out_patch_size, self.output_size(height, width))
        if _is_channels_last(x):
            out = out.contiguous(memory_format=torch.channels_last)
        return pointwise_conv(out, self.recover.weight, self.recover.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, scale={self.scale:g}, patch_size={self.patch_size}, "
            f"encoded={self.encoded_channels}, groups={self.groups}"
        )
