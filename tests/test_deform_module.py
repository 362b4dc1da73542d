"""Deformation module D_θ: the paper's and the official layouts, softmax density, He initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from napari_m2mrf.models.deform import DeformationModule


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_variant_layers_and_parameter_count():
    module = DeformationModule("paper")
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 24, (3, 3)),
        (24, 24, (3, 3)),
        (24, 3, (3, 3)),
        (3, 1, (1, 1)),
    ]
    assert [type(m).__name__ for m in module.features if not isinstance(m, torch.nn.Conv2d)] == [
        "BatchNorm2d", "ReLU", "BatchNorm2d", "ReLU", "BatchNorm2d", "ReLU",
    ]
    # 3·24·9 + 48 + 24·24·9 + 48 + 24·3·9 + 6 + 3 + 1
    assert count(module) == 6586


def test_official_variant_matches_the_released_code_parameter_count():
    module = DeformationModule("official")
    assert count(module) == 379_273
    activations = [type(m).__name__ for m in module.features if isinstance(m, (torch.nn.ReLU6, torch.nn.ReLU))]
    assert activations == ["ReLU6", "ReLU6", "ReLU"]
    bn = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert torch.allclose(bn.bias, torch.full_like(bn.bias, 1e-4))


def test_density_is_a_softmax_over_all_positions():
    torch.manual_seed(0)
    module = DeformationModule("paper").eval()
    density = module(torch.randn(2, 3, 12, 20))
    assert density.shape == (2, 1, 12, 20)
    assert torch.all(density > 0)
    assert torch.allclose(density.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-6)
    # Not a per-row or per-column softmax: rows do not each sum to 1.
    assert not torch.allclose(density.sum(dim=3), torch.ones(2, 1, 12), atol=1e-3)


def test_he_initialisation():
    torch.manual_seed(0)
    module = DeformationModule("official")
    wide = module.features[3].weight  # 192 -> 192, fan-in 192·9
    expected = math.sqrt(2.0 / (192 * 9))
    assert wide.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(wide.mean().item()) < 0.05 * expected


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="paper"):
        DeformationModule("wide")
