"""Reverse sampler Π∘G⁻¹: exact nearest-sample fill of any region of any level, lazy pyramid, intrinsic IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import NearestNDInterpolator

from napari_m2mrf.models.deform import DeformedSampler, grid_to_pixels, uniform_grid
from napari_m2mrf.sampling.reverse import (
    ReverseFilledLevel,
    ReverseSampler,
    intrinsic_iou,
    reverse_filled_pyramid,
)


def deformed_points(
    seed: int, image_size: tuple[int, int], grid_size: tuple[int, int], sigma: float = 3.0
) -> np.ndarray:
    """``h×w×2`` (y, x) level-0 positions of a deformed grid from a random blobby density."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid_size
    logits = torch.nn.functional.interpolate(torch.randn(1, 1, 6, 6, generator=g) * 2.5, size=(h, w), mode="bicubic")
    density = torch.softmax(logits.reshape(1, -1), 1).reshape(1, 1, h, w)
    grid = DeformedSampler(sigma)(density, (h, w))
    return grid_to_pixels(grid, image_size)[0].double().numpy()


def pixel_centres(shape: tuple[int, int], factors: tuple[float, float], offset=(0, 0)) -> np.ndarray:
    rows, cols = np.mgrid[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]]
    return np.stack(((rows + 0.5) * factors[0] - 0.5, (cols + 0.5) * factors[1] - 0.5), axis=-1).reshape(-1, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("factors", [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (2.0, 3.0), (8.0, 8.0), (32.0, 32.0)])
def test_equals_scipy_nearest_interpolator_on_random_deformed_grids(seed, factors):
    image_size = (300, 420)
    points = deformed_points(seed, image_size, (24, 32))
    values = np.random.default_rng(seed).integers(0, 1000, size=points.shape[:2])
    level_shape = (int(np.ceil(image_size[0] / factors[0])), int(np.ceil(image_size[1] / factors[1])))
    filled = ReverseSampler(points, values).fill(slice(0, level_shape[0]), slice(0, level_shape[1]), factors)
    reference = NearestNDInterpolator(points.reshape(-1, 2), values.reshape(-1))(pixel_centres(level_shape, factors))
    assert filled.shape == level_shape
    assert np.mean(filled.reshape(-1) == reference) >= 0.999


def test_clustered_samples_and_regions_beyond_them_match_the_exact_nearest_sample():
    """Tight clusters among sparse samples, and a region reaching 90–210 px past every sample: tiles
    whose window of nearby tiles may not hold every candidate take the k-d tree route; still exact."""
    rng = np.random.default_rng(7)
    sparse = rng.uniform(0, 400, size=(300, 2))
    clusters = np.concatenate([centre + rng.normal(0, 1.5, size=(400, 2)) for centre in ((100, 100), (300, 250))])
    points = np.concatenate((sparse, clusters)) + (150, 90)
    values = np.arange(len(points))
    sampler = ReverseSampler(points, values)
    filled = sampler.fill(slice(0, 710), slice(0, 700))
    reference = NearestNDInterpolator(points, values)(pixel_centres((710, 700), (1.0, 1.0)))
    assert np.mean(filled.reshape(-1) == reference) >= 0.9999
    assert sampler._tree is not None, "some tiles should have needed the k-d tree"


def test_chunks_are_the_matching_parts_of_the_whole_region():
    points = deformed_points(3, (256, 256), (16, 16))
    values = np.arange(256).reshape(16, 16)
    sampler = ReverseSampler(points, values)
    whole = sampler.fill(slice(0, 256), slice(0, 256))
    for rows, cols in [((0, 37), (0, 256)), ((100, 171), (13, 14)), ((250, 256), (200, 256)), ((64, 128), (64, 128))]:
        part = sampler.fill(slice(*rows), slice(*cols))
        assert np.array_equal(part, whole[slice(*rows), slice(*cols)])
    assert ReverseSampler(points, values, workers=2).fill(slice(0, 256), slice(0, 256)).tolist() == whole.tolist()


def test_regions_wider_than_a_band_are_filled_in_column_pieces():
    image_size = (48, 20000)  # wider than the 16384-pixel full-width bands
    points = deformed_points(7, image_size, (6, 250))
    values = np.arange(6 * 250).reshape(6, 250)
    sampler = ReverseSampler(points, values)
    filled = sampler.fill(slice(0, 48), slice(0, 20000))
    reference = NearestNDInterpolator(points.reshape(-1, 2), values.reshape(-1))(pixel_centres(image_size, (1.0, 1.0)))
    assert np.mean(filled.reshape(-1) == reference) >= 0.999
    assert np.array_equal(sampler.fill(slice(0, 48), slice(16000, 17000)), filled[:, 16000:17000])


def test_every_sample_owns_the_pixel_it_sits_on():
    points = deformed_points(4, (200, 200), (10, 10))
    sampler = ReverseSampler(points, np.arange(100).reshape(10, 10))
    whole = sampler.fill(slice(0, 200), slice(0, 200))
    rows, cols = np.rint(points).clip(0, 199).astype(int).transpose(2, 0, 1)
    near = np.abs(points - np.rint(points)).max(-1) < 0.25  # sample close to a pixel centre
    assert np.array_equal(whole[rows, cols][near], np.arange(100).reshape(10, 10)[near])


def test_vector_values_keep_their_channel_axis():
    points = deformed_points(5, (64, 96), (8, 12))
    probabilities = np.random.default_rng(0).random((4, 8, 12)).astype(np.float32)
    sampler = ReverseSampler(points, probabilities)
    assert sampler.channels == 4
    filled = sampler.fill(slice(0, 64), slice(0, 96))
    index = sampler.nearest_index(slice(0, 64), slice(0, 96))
    assert filled.shape == (4, 64, 96) and filled.dtype == np.float32
    assert np.array_equal(filled, probabilities.reshape(4, -1)[:, index])


def test_bad_input_is_refused():
    points = deformed_points(0, (32, 32), (4, 4))
    with pytest.raises(ValueError, match="does not match"):
        ReverseSampler(points, np.zeros((5, 4)))
    bad = points.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        ReverseSampler(bad, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="positive"):
        ReverseSampler(points, np.zeros((4, 4))).fill(slice(0, 4), slice(0, 4), 0.0)


def test_lazy_label_pyramid_computes_only_what_is_asked():
    image_size = (1000, 1400)
    points = deformed_points(6, image_size, (20, 28), sigma=2.0)
    labels = np.random.default_rng(1).integers(0, 5, size=(20, 28)).astype(np.uint8)
    sampler = ReverseSampler(points, labels)
    shapes = [(1000, 1400), (500, 700), (250, 350)]
    pyramid = reverse_filled_pyramid(sampler, shapes, [1, 2, 4], chunks=256)
    assert [lvl.shape for lvl in pyramid] == shapes
    assert all(lvl.dtype == np.uint8 for lvl in pyramid)
    assert pyramid[0].chunks[0][0] == 256
    coarse = pyramid[2].compute()
    assert np.array_equal(coarse, sampler.fill(slice(0, 250), slice(0, 350), 4))
    window = pyramid[0][300:420, 1000:1300].compute()
    assert np.array_equal(window, sampler.fill(slice(300, 420), slice(1000, 1300)))
    level = ReverseFilledLevel(sampler, (500, 700), 2)
    assert np.array_equal(level[10:20:3, -5:], sampler.fill(slice(10, 20), slice(695, 700), 2)[::3])
    assert level[7, 9] == sampler.fill(slice(7, 8), slice(9, 10), 2)[0, 0]
    with pytest.raises(IndexError):
        level[500, 0]


def test_intrinsic_iou_is_one_for_uniform_sampling_at_full_density():
    labels = np.random.default_rng(2).integers(0, 3, size=(48, 64))
    points = grid_to_pixels(uniform_grid(1, (48, 64)), (48, 64))[0].double().numpy()
    assert np.allclose(intrinsic_iou(labels, points, 3), 1.0)


def test_density_on_a_small_object_raises_its_intrinsic_iou_at_the_same_budget():
    size, budget = 256, (16, 16)
    labels = np.zeros((size, size), dtype=np.int64)
    yy, xx = np.mgrid[:size, :size]
    # an 11-pixel disc midway between the samples of the uniform 16-pixel grid
    labels[(yy - 79.5) ** 2 + (xx - 175.5) ** 2 <= 5.5**2] = 1
    uniform = grid_to_pixels(uniform_grid(1, budget), (size, size))[0].double().numpy()
    density = torch.ones(1, 1, *budget)
    cy, cx = 80 / size * budget[0] - 0.5, 176 / size * budget[1] - 0.5
    gy, gx = torch.meshgrid(torch.arange(budget[0]).float(), torch.arange(budget[1]).float(), indexing="ij")
    density += 1000 * torch.exp(-((gy - cy) ** 2 + (gx - cx) ** 2) / 2)
    grid = DeformedSampler(3.0)(density / density.sum(), budget)
    deformed = grid_to_pixels(grid, (size, size))[0].double().numpy()
    iou_uniform = intrinsic_iou(labels, uniform, 2)
    iou_deformed = intrinsic_iou(labels, deformed, 2)
    assert iou_uniform[1] == 0.0
    assert iou_deformed[1] > 0.7
    assert iou_deformed[0] > 0.98
