"""Property-based tests (hypothesis) of the samplers, the M2MRF operator and the metrics.

Each property draws small random cases (sizes, densities, patch sizes, probability maps) and checks
an invariant or a reference implementation: the deformed and pyramid samplers keep every sample
inside the image and give the uniform grid for a uniform density; M2MRF's output is
``max(⌊δH⌋, 1) × max(⌊δW⌋, 1)`` and equals the same operator run on the zero-padded input, cropped;
the dense AUPR equals scikit-learn's ``average_precision_score`` (within the reported bound), and
the official 11-threshold AUPR, IoU and F1 equal a direct numpy computation of the protocol. Example
counts are kept small so that the file runs in well under a minute on two loaded cores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.metrics import OFFICIAL_THRESHOLDS, LesionMetrics
from napari_m2mrf.models.deform import (
    DeformedSampler,
    UniformSampler,
    grid_to_pixels,
    pixels_to_grid,
    sample_image,
    uniform_grid,
)
from napari_m2mrf.models.m2mrf import M2MRF
from napari_m2mrf.sampling.pyramid import choose_levels, local_spacing, sample_pyramid

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes = st.tuples(st.integers(2, 14), st.integers(2, 14))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- deformed sampler ----------------------------------------------------------------------------------


@FAST
@given(
    density_size=sizes,
    output_size=sizes,
    batch=st.integers(1, 2),
    sigma=st.floats(0.3, 4.0),
    aspect=st.sampled_from([1.0, 2.0, "grid"]),
    seed=st.integers(0, 2**16),
    spiky=st.booleans(),
)
def test_deformed_grid_has_its_shape_and_stays_inside_the_image(density_size, output_size, batch, sigma, aspect, seed, spiky):
    generator = torch.Generator().manual_seed(seed)
    density = torch.rand((batch, 1, *density_size), generator=generator, dtype=torch.float64)
    if spiky:  # nearly all mass in one pixel, at the border: pulls samples hardest towards the edge
        density = density * 1e-6
        density[:, :, 0, -1] = 1.0
    grid = DeformedSampler(sigma, aspect_ratio=aspect)(density, output_size)
    assert grid.shape == (batch, *output_size, 2)
    assert torch.isfinite(grid).all()
    assert grid.min() >= -1.0 and grid.max() <= 1.0
    image_size = (37, 53)
    pixels = grid_to_pixels(grid, image_size)  # inside [-0.5, size - 0.5]: the image's own extent
    assert pixels[..., 0].min() >= -0.5 - 1e-9 and pixels[..., 0].max() <= image_size[0] - 0.5 + 1e-9
    assert pixels[..., 1].min() >= -0.5 - 1e-9 and pixels[..., 1].max() <= image_size[1] - 0.5 + 1e-9
    torch.testing.assert_close(pixels_to_grid(pixels, image_size), grid)


@FAST
@given(density_size=sizes, output_size=sizes, level=st.floats(1e-3, 1e3), sigma=st.floats(0.3, 4.0),
       aspect=st.sampled_from([1.0, 3.0, "grid"]))
def test_uniform_density_gives_the_uniform_grid(density_size, output_size, level, sigma, aspect):
    density = torch.full((1, 1, *density_size), level, dtype=torch.float64)
    grid = DeformedSampler(sigma, aspect_ratio=aspect)(density, output_size)
    expected = uniform_grid(1, output_size, dtype=torch.float64)
    torch.testing.assert_close(grid, expected, atol=1e-9, rtol=0)
    torch.testing.assert_close(UniformSampler()(density, output_size), expected)


@FAST
@given(output_size=sizes, image_size=st.tuples(st.integers(1, 20), st.integers(1, 20)), seed=st.integers(0, 1000))
def test_sampling_a_constant_image_gives_the_constant(output_size, image_size, seed):
    generator = torch.Generator().manual_seed(seed)
    grid = torch.rand((1, *output_size, 2), generator=generator) * 2 - 1
    image = torch.full((1, 3, *image_size), 7.25)
    sampled = sample_image(image, grid)
    assert sampled.shape == (1, 3, *output_size)
    torch.testing.assert_close(sampled, torch.full_like(sampled, 7.25))


# -- pyramid sampler -----------------------------------------------------------------------------------


def _pyramid(height: int, width: int, levels: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """(C, Y, X) uint8 levels made by 2×2 averaging (as the workspace pyramids are), factors 2**k."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (3, height, width)).astype(np.float64)
    found = [pixels]
    for _ in range(1, levels):
        top = found[-1]
        h, w = max(top.shape[1] // 2, 1), max(top.shape[2] // 2, 1)
        found.append(top[:, : 2 * h, : 2 * w].reshape(3, h, 2, w, 2).mean(axis=(2, 4)))
    return [np.round(level).astype(np.uint8) for level in found], [2**k for k in range(levels)]


@FAST
@given(
    height=st.integers(8, 64), width=st.integers(8, 64), levels=st.integers(1, 3),
    grid=sizes, seed=st.integers(0, 2**16),
)
def test_pyramid_samples_stay_inside_and_read_existing_levels(height, width, levels, grid, seed):
    arrays, factors = _pyramid(height, width, levels, seed)
    rng = np.random.default_rng(seed)
    points = np.stack([rng.uniform(-0.5, height - 0.5, grid), rng.uniform(-0.5, width - 0.5, grid)], axis=-1)
    samples = sample_pyramid(arrays, factors, points)
    assert samples.values.shape == (*grid, 3) and samples.values.dtype == np.float32
    assert samples.level.shape == grid
    assert samples.level.min() >= 0 and samples.level.max() < levels
    assert np.isfinite(samples.values).all()
    assert samples.values.min() >= 0 and samples.values.max() <= 255  # bilinear: within the pixels' range
    spacing = local_spacing(points)
    chosen = choose_levels(spacing, factors)
    pitches = np.array(factors, dtype=float)[chosen]
    assert np.all((pitches <= spacing * (1 + 1e-9)) | (chosen == 0))  # never coarser than the spacing asks


@FAST
@given(height=st.integers(4, 40), width=st.integers(4, 40), seed=st.integers(0, 2**16), value=st.integers(0, 255))
def test_pyramid_sampling_is_exact_at_pixel_centres_and_on_constants(height, width, seed, value):
    arrays, factors = _pyramid(height, width, 1, seed)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    centres = np.stack([rows, cols], axis=-1).astype(float)
    exact = sample_pyramid(arrays, factors, centres, spacing=np.zeros(centres.shape[:2]))
    np.testing.assert_array_equal(exact.values, np.moveaxis(arrays[0], 0, -1).astype(np.float32))
    constant = [np.full_like(level, value) for level in _pyramid(height, width, 3, seed)[0]]
    rng = np.random.default_rng(seed)
    points = np.stack([rng.uniform(0, height - 1, (5, 6)), rng.uniform(0, width - 1, (5, 6))], axis=-1)
    np.testing.assert_allclose(sample_pyramid(constant, [1, 2, 4], points).values, value, atol=1e-4)


# -- M2MRF operator ------------------------------------------------------------------------------------

OPERATOR_CASES = st.sampled_from([(2, 0.5), (4, 0.5), (4, 0.25), (8, 0.5), (8, 0.25), (2, 2.0), (4, 2.0), (2, 4.0)])


@FAST
@given(
    height=st.integers(1, 30), width=st.integers(1, 30), channels=st.sampled_from([1, 2, 4, 8]),
    out_channels=st.integers(1, 5), case=OPERATOR_CASES, batch=st.integers(1, 2), seed=st.integers(0, 2**16),
)
def test_m2mrf_output_size_and_padding_rule(height, width, channels, out_channels, case, batch, seed):
    patch, scale = case
    torch.manual_seed(seed)
    operator = M2MRF(channels, out_channels, scale, patch_size=patch, compress_rate=1, alpha=1).double().eval()
    with torch.no_grad():  # give the biases a value: the padding rule is about them
        operator.compressor.bias.uniform_(-1, 1)
        operator.patch_reduce.bias.uniform_(-1, 1) if operator.patch_reduce.bias is not None else None
    x = torch.randn(batch, channels, height, width, dtype=torch.float64)
    with torch.no_grad():
        out = operator(x)
    expected = (max(math.floor(scale * height), 1), max(math.floor(scale * width), 1))
    assert out.shape == (batch, out_channels, *expected)
    assert operator.output_size(height, width) == expected
    # padding rule: the input is zero-padded to whole patches (padded pixels carry the compressor's
    # bias, as in the official code) and the output cut to the official size
    padded_h, padded_w = -(-height // patch) * patch, -(-width // patch) * patch
    padded = torch.nn.functional.pad(x, (0, padded_w - width, 0, padded_h - height))
    with torch.no_grad():
        reference = operator(padded)[..., : expected[0], : expected[1]]
    torch.testing.assert_close(out, reference, atol=1e-9, rtol=1e-9)


@settings(max_examples=15, deadline=None)
@given(scale=st.sampled_from([0.0, -0.5, 0.3, 1.0, 3.0]), patch=st.sampled_from([1, 2, 8]))
def test_m2mrf_refuses_scales_that_are_not_powers_of_two(scale, patch):
    with pytest.raises(ValueError):
        M2MRF(4, 4, scale, patch_size=patch, compress_rate=1, alpha=1)


# -- metrics against reference implementations ---------------------------------------------------------

one_class = (FUNDUS_CLASSES[0],)


@st.composite
def scored_images(draw, quantised: bool):
    """1-3 images of (1, H, W) float32 scores and (1, H, W) bool truth with at least one positive."""
    count = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        truth = rng.random((1, h, w)) < draw(st.floats(0.05, 0.9))
        if quantised:
            scores = rng.integers(0, 256, (1, h, w)).astype(np.uint8)
        else:
            scores = rng.random((1, h, w), dtype=np.float32)
            ties = draw(st.sampled_from([None, 0.0, 0.5, 1.0, 0.3]))
            if ties is not None:  # a share of pixels exactly at a threshold (strict > matters there)
                scores[rng.random(scores.shape) < 0.3] = np.float32(ties)
        images.append((scores, truth))
    if not any(truth.any() for _, truth in images):
        images[0][1].flat[0] = True
    return images


def _pooled(images) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([(s.astype(np.float32) / 255 if s.dtype == np.uint8 else s).ravel() for s, _ in images])
    truth = np.concatenate([t.ravel() for _, t in images])
    return scores.astype(np.float32), truth


def _metrics(images) -> dict:
    metrics = LesionMetrics(one_class)
    for scores, truth in images:
        metrics.update(scores, truth)
    return metrics.compute()["per_class"][one_class[0].code]


def official_reference(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The official protocol written out directly: 11 strict thresholds, pooled counts, trapezoids."""
    precision, recall = [], []
    positives = truth.sum()
    for t in OFFICIAL_THRESHOLDS.astype(np.float32):
        predicted = scores > t
        tp = np.sum(predicted & truth)
        p = predicted.sum()
        precision.append(tp / p if p else 1.0)
        recall.append(tp / positives if positives else 0.0)
    aupr = abs(sum((recall[k + 1] - recall[k]) * (precision[k + 1] + precision[k]) / 2 for k in range(10)))
    predicted = scores > np.float32(0.5)
    tp, p = np.sum(predicted & truth), predicted.sum()
    fn = positives - tp
    return {
        "aupr_official_11pt": aupr,
        "iou": tp / (p + fn) if p + fn else math.nan,
        "f1": 2 * tp / (p + tp + fn) if p + tp + fn else math.nan,
    }


@FAST
@given(images=scored_images(quantised=False))
def test_official_aupr_iou_f1_match_a_direct_computation(images):
    found = _metrics(images)
    expected = official_reference(*_pooled(images))
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, abs=1e-12, nan_ok=True), name


@FAST
@given(images=scored_images(quantised=True))
def test_dense_aupr_equals_scikit_learn_on_8_bit_maps(images):
    from sklearn.metrics import average_precision_score

    scores, truth = _pooled(images)
    found = _metrics(images)
    assert found["aupr_dense"] == pytest.approx(average_precision_score(truth, scores), abs=1e-12)
    assert found["aupr_dense_error_bound"] >= 0.0  # (conservative: it cannot know a bin holds one value)


@FAST
@given(images=scored_images(quantised=False))
def test_dense_aupr_is_within_its_bound_of_scikit_learn(images):
    from sklearn.metrics import average_precision_score

    scores, truth = _pooled(images)
    found = _metrics(images)
    exact = average_precision_score(truth, scores)
    assert abs(found["aupr_dense"] - exact) <= found["aupr_dense_error_bound"] + 1e-12
    assert 0.0 <= found["aupr_dense"] <= 1.0 and 0.0 <= found["aupr_official_11pt"] <= 1.0
