"""Deformed sampler G_d (eq. 3), uniform sampler and the coordinate conventions, on hand-checked cases."""

from __future__ import annotations

import math

import pytest
import torch

from napari_m2mrf.models.deform import (
    DeformationModule,
    DeformedOutput,
    DeformedSampler,
    DeformedSegmenter,
    UniformSampler,
    grid_to_pixels,
    pixels_to_grid,
    sample_image,
    sample_labels,
    sigma_from_fwhm,
    uniform_grid,
)


def uniform_density(n: int, h: int, w: int) -> torch.Tensor:
    return torch.full((n, 1, h, w), 1.0 / (h * w))


def blob_density(h: int, w: int, centre: tuple[float, float], weight: float, radius: float = 2.0) -> torch.Tensor:
    """Background 1 plus ``weight`` × a Gaussian blob, normalised to sum 1 (``1×1×h×w``)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * radius**2))
    density = 1.0 + weight * blob
    return (density / density.sum())[None, None]


@pytest.mark.parametrize(
    ("density_size", "output_size", "sigma", "aspect"),
    [((32, 32), (32, 32), 5.0, 1.0), ((24, 40), (48, 80), 3.0, 1.0), ((16, 16), (8, 8), 4.0, 1.0),
     ((8, 64), (8, 64), 2.0, "grid")],
)
def test_uniform_density_gives_the_uniform_grid(density_size, output_size, sigma, aspect):
    grid = DeformedSampler(sigma, aspect_ratio=aspect)(uniform_density(2, *density_size), output_size)
    expected = uniform_grid(2, output_size)
    # span of the normalised coordinates is 2: deviation <= 1e-4 of the span
    assert (grid - expected).abs().max().item() <= 2e-4


def test_uniform_grid_is_the_pixel_centres_of_uniform_downsampling():
    points = grid_to_pixels(uniform_grid(1, (16, 8)), (64, 32))[0]
    assert torch.allclose(points[:, 0, 0], torch.arange(16) * 4 + 1.5)
    assert torch.allclose(points[0, :, 1], torch.arange(8) * 4 + 1.5)
    assert torch.allclose(pixels_to_grid(points, (64, 32)), uniform_grid(1, (16, 8))[0], atol=1e-6)


def test_uniform_sampler_has_the_same_call_as_the_deformed_one():
    density = blob_density(16, 16, (4, 4), 50.0)
    grid = UniformSampler()(density, (10, 12))
    assert grid.shape == DeformedSampler(3.0)(density, (10, 12)).shape == (1, 10, 12, 2)
    assert torch.equal(grid, uniform_grid(1, (10, 12)))


def fraction_near(grid: torch.Tensor, centre_xy: tuple[float, float], radius: float) -> float:
    distance = (grid[0] - torch.tensor(centre_xy)).norm(dim=-1)
    return (distance < radius).float().mean().item()


def test_a_dense_blob_pulls_samples_more_strongly_as_its_weight_grows():
    h = w = 32
    centre = (20.0, 10.0)  # (y, x) in density pixels
    centre_xy = ((centre[1] + 0.5) / w * 2 - 1, (centre[0] + 0.5) / h * 2 - 1)
    sampler = DeformedSampler(sigma=6.0)
    base = uniform_grid(1, (h, w))
    fractions = [fraction_near(base, centre_xy, 0.2)]
    for weight in (2.0, 10.0, 50.0):
        grid = sampler(blob_density(h, w, centre, weight), (h, w))
        fractions.append(fraction_near(grid, centre_xy, 0.2))
        # every displacement near the blob points towards it
        displacement = grid[0] - base[0]
        towards = torch.tensor(centre_xy) - base[0]
        ring = (towards.norm(dim=-1) > 0.1) & (towards.norm(dim=-1) < 0.4)
        assert ((displacement * towards).sum(-1)[ring] > 0).all()
    assert fractions == sorted(fractions) and fractions[-1] > 2 * fractions[0]


def test_coordinates_stay_inside_the_image_and_can_reach_its_border():
    torch.manual_seed(1)
    for _ in range(5):
        density = torch.softmax(torch.randn(2, 24 * 24) * 4, dim=1).reshape(2, 1, 24, 24)
        grid = DeformedSampler(4.0)(density, (24, 24))
        assert grid.abs().max() <= 1.0
        points = grid_to_pixels(grid, (960, 960))
        assert points.min() >= -0.5 and points.max() <= 959.5
    # all the mass in the last column: the outermost samples move past the uniform grid's last
    # pixel centre, right up to the border of the image
    density = torch.full((1, 1, 16, 16), 1e-4)
    density[..., -1] = 1.0
    grid = DeformedSampler(3.0)(density / density.sum(), (16, 16))
    assert grid[..., 0].max() > 1 - 0.25 / 16
    assert grid[..., 0].max() <= 1.0


def test_gradients_reach_the_deformation_module_through_the_sampler():
    torch.manual_seed(0)
    deformation = DeformationModule("paper")
    image = torch.rand(2, 3, 64, 64)
    density = deformation(torch.nn.functional.interpolate(image, size=(16, 16), mode="area"))
    grid = DeformedSampler(3.0)(density, (16, 16))
    deformed = sample_image(image, grid)
    deformed.square().mean().backward()
    for p in deformation.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert deformation.features[0].weight.grad.abs().sum() > 0


def test_image_and_labels_are_read_at_the_same_positions():
    h, w = 40, 56
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ramp = torch.stack((yy, xx))[None]  # channel 0 = y, channel 1 = x of each pixel
    grid = DeformedSampler(3.0)(blob_density(12, 12, (3, 8), 30.0), (12, 12))
    points = grid_to_pixels(grid, (h, w))[0]
    inside = ((points[..., 0] >= 0) & (points[..., 0] <= h - 1) & (points[..., 1] >= 0) & (points[..., 1] <= w - 1))
    sampled = sample_image(ramp, grid)[0].permute(1, 2, 0)
    assert torch.allclose(sampled[inside], points[inside], atol=1e-3)  # bilinear is exact on a ramp
    ids = torch.arange(h * w).reshape(1, h, w)
    labels = sample_labels(ids, grid)[0]
    nearest = points.round().clamp(min=0)
    nearest[..., 0].clamp_(max=h - 1)
    nearest[..., 1].clamp_(max=w - 1)
    frac = (points - points.floor() - 0.5).abs()
    clear = (frac > 1e-3).all(-1)  # away from exact half-pixel ties
    expected = (nearest[..., 0] * w + nearest[..., 1]).long()
    assert torch.equal(labels[clear], expected[clear])
    with pytest.raises(TypeError):
        sample_labels(ids.float(), grid)


def test_official_label_sampling_interpolates_class_ids_then_truncates():
    labels = torch.tensor([[[0, 3]]])  # one row: class 0 at x = 0, class 3 at x = 1
    # normalised x −0.5 and 0.5 are the two pixel centres; 0.1 is 0.6 of the way from pixel 0 to pixel 1
    grid = torch.tensor([[[[-0.5, 0.0], [0.1, 0.0], [0.5, 0.0], [-0.1, 0.0]]]])
    assert sample_labels(labels, grid)[0, 0].tolist() == [0, 3, 3, 0]
    # bilinear: 0, 0.6·3 = 1.8 → 1, 3, 0.4·3 = 1.2 → 1 — a class neither neighbour has
    assert sample_labels(labels, grid, mode="bilinear_truncate")[0, 0].tolist() == [0, 1, 3, 1]
    with pytest.raises(ValueError, match="bilinear_truncate"):
        sample_labels(labels, grid, mode="bilinear")
    segmenter = DeformedSegmenter(torch.nn.Identity(), (1, 4), label_sampling="bilinear_truncate")
    output = DeformedOutput(torch.zeros(1, 3, 1, 4), grid, torch.ones(1, 1, 1, 4) / 4, torch.zeros(1, 3, 1, 4))
    assert segmenter.sampled_labels(labels, output)[0, 0].tolist() == [0, 1, 3, 1]


def test_kernel_conventions():
    assert sigma_from_fwhm(2 * math.sqrt(2 * math.log(2))) == pytest.approx(1.0)
    official = DeformedSampler.official(15.0)
    assert official.sigma == pytest.approx(15 / 2.3548, rel=1e-4)
    assert official.kernel_radii((64, 128)) == (15, 30)  # 31×61 kernel of the Cityscapes config
    paper = DeformedSampler(15.0)
    assert paper.kernel_radii((64, 128)) == (15, 15)  # square 2σ+1 kernel
    assert DeformedSampler(4.0, aspect_ratio=2.5).kernel_sigmas((10, 100)) == (4.0, 10.0)
    assert DeformedSampler(4.0, aspect_ratio=2.5).kernel_sigmas((100, 10)) == (10.0, 4.0)
    with pytest.raises(ValueError):
        DeformedSampler(0.0)
