"""Edge-loss target and loss (eq. 4), DeformedSegmenter around real networks, dynamic output size (A.6)."""

from __future__ import annotations

import pytest
import torch

from napari_m2mrf.models.deform import (
    DeformedSegmenter,
    DeformedSampler,
    UniformSampler,
    dynamic_output_size,
    edge_loss,
    edge_target,
    uniform_grid,
)


def test_edge_target_is_zero_for_a_constant_label():
    assert torch.count_nonzero(edge_target(torch.full((2, 16, 16), 3))) == 0


def test_edge_target_marks_the_object_boundary_and_not_the_image_border():
    labels = torch.zeros(1, 40, 40, dtype=torch.long)
    labels[0, 12:28, 12:28] = 2
    labels[0, :, 34:] = 1  # a class touching the image border on three sides
    target = edge_target(labels)[0, 0]
    assert target.shape == (40, 40)
    assert torch.all(target >= 0)
    assert target[12:28, 12].max() > 0.05  # just inside the square's left edge
    assert target[18:22, 18:22].max() < 1e-3  # deep inside the square
    assert target[2:8, 2:8].max() < 1e-3  # far from everything
    # the right-hand band: an edge at its inner side, none along the image border it touches
    assert target[5:35, 34].max() > 0.01
    assert target[5:35, 39].max() < 1e-3
    assert target[0, 38:].max() < 1e-3 and target[39, 38:].max() < 1e-3


def test_edge_loss_plain_and_minmax():
    target = edge_target(torch.randint(0, 3, (2, 20, 20)))
    assert edge_loss(target, target).item() == 0.0
    assert edge_loss(target * 1e-3, target).item() > 0.0
    assert edge_loss(target * 1e-3, target, normalize="minmax").item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError):
        edge_loss(target, target, normalize="batch")


class TinySegNet(torch.nn.Module):
    """Two convolutions: N×3×h×w → N×K×h×w logits."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_segmenter_outputs_and_joint_loss_reach_both_networks():
    torch.manual_seed(0)
    model = DeformedSegmenter(TinySegNet(3), output_size=(16, 24), density_size=(32, 48), sampler=DeformedSampler(4.0))
    image = torch.rand(2, 3, 96, 144)
    labels = torch.zeros(2, 96, 144, dtype=torch.long)
    labels[:, 30:50, 40:90] = 1
    labels[:, 60:70, 100:110] = 2
    out = model(image)
    assert out.logits.shape == (2, 3, 16, 24)
    assert out.grid.shape == (2, 16, 24, 2)
    assert out.density.shape == (2, 1, 32, 48)
    assert out.deformed_image.shape == (2, 3, 16, 24)
    points = out.points((96, 144))
    assert points.shape == (2, 16, 24, 2)
    assert points[..., 0].min() >= -0.5 and points[..., 0].max() <= 95.5
    target = model.sampled_labels(labels, out)
    assert target.shape == (2, 16, 24) and set(target.unique().tolist()) <= {0, 1, 2}
    seg = torch.nn.functional.cross_entropy(out.logits, target)
    seg.backward(retain_graph=True)
    grads = [p.grad.abs().sum() for p in model.deformation.parameters()]
    assert all(torch.isfinite(g) for g in grads) and sum(grads) > 0  # through the sampler alone
    model.zero_grad()
    edge = model.edge_term(labels, out)
    assert edge.item() > 0
    (seg + edge).backward()
    assert model.seg_net.body[0].weight.grad.abs().sum() > 0
    assert model.deformation.compress.weight.grad.abs().sum() > 0


def test_uniform_sampler_baseline_in_the_segmenter():
    model = DeformedSegmenter(TinySegNet(2), output_size=(8, 8), sampler=UniformSampler())
    out = model(torch.rand(1, 3, 32, 32))
    assert torch.equal(out.grid, uniform_grid(1, (8, 8)))


def test_segmenter_wraps_a_registered_hrnet():
    build_model = pytest.importorskip("napari_m2mrf.models").build_model
    torch.manual_seed(0)
    seg_net = build_model("hrnetv2_w18s", num_classes=3)
    model = DeformedSegmenter(seg_net, output_size=(64, 64), sampler=DeformedSampler(6.0))
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 256))
    assert out.logits.shape == (1, 3, 64, 64)
    assert torch.isfinite(out.logits).all()


def test_dynamic_output_size_rule():
    assert dynamic_output_size((368, 7986)) == (36, 800)  # the paper's example
    assert dynamic_output_size((7986, 368)) == (800, 36)
    assert dynamic_output_size((368, 7986), rule="official") == (40, 887)
    assert dynamic_output_size((2000, 4000)) == (80, 160)  # short side limits
    assert dynamic_output_size((2000, 20000)) == (80, 800)
    assert dynamic_output_size((50, 100)) == (50, 100)  # never upsampled
    with pytest.raises(ValueError):
        dynamic_output_size((0, 10))
