"""The M2MRF operator against a plain Unfold → per-patch linear → Fold formulation of the same maths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_m2mrf.models.m2mrf import M2MRF, assemble_patches, cut_patches, pointwise_conv


def unfold_fold_m2mrf(op: M2MRF, x: torch.Tensor) -> torch.Tensor:
    """Paper eqs. 3-6 as the official code writes them: pad, compress, Unfold, two Conv1d, Fold, recover."""
    size, scale, groups = op.patch_size, op.scale, op.groups
    _, _, height, width = x.shape
    padded_h, padded_w = math.ceil(height / size) * size, math.ceil(width / size) * size
    x = F.pad(x, (0, padded_w - width, 0, padded_h - height))
    encoded = F.conv2d(x, op.compressor.weight, op.compressor.bias)
    columns = F.unfold(encoded, kernel_size=size, stride=size)  # N × (e·S²) × patches
    hidden = F.conv1d(columns, op.patch_reduce.weight[..., None], op.patch_reduce.bias, groups=groups)
    expanded = F.conv1d(hidden, op.patch_expand.weight[..., None], op.patch_expand.bias, groups=groups)
    out_patch = int(size * scale)
    assembled = F.fold(
        expanded, (int(padded_h * scale), int(padded_w * scale)), kernel_size=out_patch, stride=out_patch
    )
    recovered = F.conv2d(assembled, op.recover.weight, op.recover.bias)
    return recovered[:, :, : max(int(height * scale), 1), : max(int(width * scale), 1)]


def randomise(op: M2MRF, generator: torch.Generator) -> None:
    """Non-zero random values in every parameter (biases included), so no term can hide."""
    with torch.no_grad():
        for parameter in op.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


CASES = [
    # (C_in, C_out, scale, H, W, patch_size, compress_rate, alpha, groups)
    (8, 12, 0.5, 15, 9, 8, 4, 64, 1),
    (8, 4, 0.25, 17, 33, 8, 4, 64, 1),
    (16, 8, 0.125, 23, 40, 8, 4, 64, 1),
    (8, 8, 2.0, 5, 11, 8, 4, 64, 1),
    (12, 6, 4.0, 3, 9, 8, 4, 64, 1),
    (4, 4, 8.0, 2, 3, 8, 4, 64, 1),
    (16, 8, 0.5, 13, 10, 8, 4, 16, 4),
    (16, 16, 2.0, 7, 6, 8, 4, 16, 2),
    (8, 6, 0.5, 9, 7, 4, 2, 4, 1),  # alpha < S²: the bottleneck is wider than e
    (8, 6, 2.0, 9, 7, 4, 2, 4, 2),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"C{c[0]}-{c[1]}_s{c[2]:g}_{c[3]}x{c[4]}_S{c[5]}r{c[6]}a{c[7]}g{c[8]}")
def test_matches_unfold_fold_in_float64(case: tuple, channels_last: bool) -> None:
    c_in, c_out, scale, height, width, size, rate, alpha, groups = case
    generator = torch.Generator().manual_seed(hash(case) % 2**31)
    op = M2MRF(c_in, c_out, scale, patch_size=size, compress_rate=rate, alpha=alpha, groups=groups).double()
    randomise(op, generator)
    x = torch.randn(2, c_in, height, width, generator=generator, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = unfold_fold_m2mrf(op, x)
    actual = op(x)
    assert actual.shape == expected.shape == (2, c_out, max(int(height * scale), 1), max(int(width * scale), 1))
    relative = (actual - expected).abs().max() / expected.abs().max()
    assert relative < 1e-10


@pytest.mark.parametrize("t", [1, 2, 3])
@pytest.mark.parametrize("direction", [-1, 1])
def test_output_size_follows_official_rounding(t: int, direction: int) -> None:
    scale = 2.0 ** (direction * t)
    op = M2MRF(4, 4, scale)
    out = op(torch.randn(1, 4, 15, 31))
    assert out.shape[-2:] == (max(int(15 * scale), 1), max(int(31 * scale), 1))
    if direction < 0:
        assert out.shape[-2] == 15 // 2**t or out.shape[-2] == 1  # floors (15 -> 7 for t=1)


def test_channels_last_input_gives_channels_last_output() -> None:
    op = M2MRF(8, 8, 2.0)
    x = torch.randn(1, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    assert op(x).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("config", [dict(scale=0.25, groups=1), dict(scale=4.0, groups=2, alpha=16)])
def test_every_parameter_receives_a_gradient(config: dict) -> None:
    op = M2MRF(8, 6, **config)
    op(torch.randn(2, 8, 13, 11)).square().sum().backward()
    for name, parameter in op.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("fold", [True, False])
def test_gradients_match_unfold_fold(fold: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    op = M2MRF(8, 4, 0.5, alpha=16, groups=2).double()
    randomise(op, generator)
    x = torch.randn(2, 8, 11, 19, generator=generator, dtype=torch.float64, requires_grad=True)
    grads = []
    for forward in (op, lambda t: unfold_fold_m2mrf(op, t)):
        op.zero_grad()
        x.grad = None
        forward(x).sin().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in op.parameters()])
    for ours, reference in zip(*grads):
        assert torch.allclose(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [3.0, 0.0, -2.0, 1.0, 1 / 16])
def test_invalid_scales_are_rejected(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        M2MRF(8, 8, scale)


def test_official_shapes_for_default_hyper_parameters() -> None:
    """In the official code e = C/4 and the bottleneck equals e; ×8 up from 48 channels has 49,152 outputs."""
    op = M2MRF(48, 48, 8.0)
    assert op.compressor.weight.shape == (12, 48, 1, 1)
    assert op.patch_reduce.weight.shape == (12, 768)
    assert op.patch_expand.weight.shape == (49152, 12)
    assert op.recover.weight.shape == (48, 12, 1, 1)


def test_patch_cut_and_reassembly_are_adjoint_with_second_derivatives() -> None:
    """gradcheck/gradgradcheck the custom autograd functions (padding, cropping) in float64."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: cut_patches(t, 4), (x,))
    assert torch.autograd.gradgradcheck(lambda t: cut_patches(t, 4), (x,))
    rows = torch.randn(2 * 2 * 2, 3 * 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: assemble_patches(r, 2, (2, 2), 4, (7, 5)), (rows,))
    assert torch.autograd.gradgradcheck(lambda r: assemble_patches(r, 2, (2, 2), 4, (7, 5)), (rows,))


def test_pointwise_conv_equals_conv2d() -> None:
    weight, bias = torch.randn(5, 3, 1, 1), torch.randn(5)
    for x in (torch.randn(2, 3, 4, 6), torch.randn(2, 3, 4, 6).contiguous(memory_format=torch.channels_last)):
        assert torch.allclose(pointwise_conv(x, weight, bias), F.conv2d(x, weight, bias), atol=1e-6)
        assert torch.allclose(pointwise_conv(x, weight, None), F.conv2d(x, weight), atol=1e-6)
