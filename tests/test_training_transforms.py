"""Training transforms keep image and masks aligned (checked on a pattern drawn into both)."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import AugmentConfig
from training.transforms import (
    LesionCentredCrop,
    PhotometricJitter,
    RandomCrop,
    RandomFlip,
    RandomRescale,
    RandomRotate90,
    ResizeToFit,
    Sample,
    fit_size,
    training_transform,
)


def pattern_sample(height: int = 60, width: int = 90, seed: int = 1) -> Sample:
    """Random 6-pixel blocks: mask k is set where image channel k is 255 (channel 2 is an
    independent block pattern that only the image carries). Non-square so rotations show."""
    rng = np.random.default_rng(seed)
    blocks = rng.random((3, -(-height // 6), -(-width // 6))) < 0.4
    full = np.repeat(np.repeat(blocks, 6, axis=1), 6, axis=2)[:, :height, :width]
    image = np.moveaxis(full, 0, -1).astype(np.uint8) * 255
    return Sample(image, full[:2].astype(np.uint8))


def assert_aligned(sample: Sample, tolerance: float = 0.0) -> None:
    """Masks equal the image's encoding channels (exactly, or up to ``tolerance`` of the pixels)."""
    assert sample.image.dtype == np.uint8 and sample.target.dtype == np.uint8
    assert sample.image.shape[:2] == sample.target.shape[1:]
    from_image = (np.moveaxis(sample.image[..., :2], -1, 0) > 127).astype(np.uint8)
    mismatch = float(np.mean(from_image != sample.target))
    assert mismatch <= tolerance, f"{mismatch:.4f} of the pixels disagree"


@pytest.mark.parametrize("seed", range(6))
def test_rotation_and_flips_are_exact(seed: int) -> None:
    sample, rng = pattern_sample(), np.random.default_rng(seed)
    rotated = RandomRotate90()(sample, rng)
    assert_aligned(rotated)
    flipped = RandomFlip(0.5, 0.5)(rotated, rng)
    assert_aligned(flipped)


def test_rotation_draws_every_quarter_turn() -> None:
    sample = pattern_sample()
    seen = set()
    for seed in range(40):
        out = RandomRotate90()(sample, np.random.default_rng(seed))
        for turns in range(4):
            if np.array_equal(out.image, np.rot90(sample.image, turns)):
                seen.add(turns)
    assert seen == {0, 1, 2, 3}


def test_flip_probabilities_zero_and_one() -> None:
    sample = pattern_sample()
    assert np.array_equal(RandomFlip(0.0, 0.0)(sample, np.random.default_rng(0)).image, sample.image)
    both = RandomFlip(1.0, 1.0)(sample, np.random.default_rng(0))
    assert np.array_equal(both.image, sample.image[::-1, ::-1])
    assert np.array_equal(both.target, sample.target[:, ::-1, ::-1])


@pytest.mark.parametrize(("height", "width"), [(40, 50), (100, 120)])
def test_crop_is_exact_and_pads_with_background(height: int, width: int) -> None:
    sample = pattern_sample()
    out = RandomCrop(height, width)(sample, np.random.default_rng(3))
    assert out.image.shape == (height, width, 3) and out.target.shape == (2, height, width)
    assert_aligned(out)
    if height > 60:
        assert not out.image[60:].any() and not out.target[:, 60:].any()


@pytest.mark.parametrize("seed", range(4))
def test_rescale_keeps_masks_on_the_pattern(seed: int) -> None:
    sample = pattern_sample()
    out = RandomRescale(0.5, 2.0)(sample, np.random.default_rng(seed))
    assert out.image.shape[:2] != sample.image.shape[:2]
    # Bilinear image vs nearest masks may differ only next to block edges.
    assert_aligned(out, tolerance=0.08)
    # Each mask's centre of mass stays where the image's pattern is (same relative position).
    for k in range(2):
        rows, cols = np.nonzero(out.target[k])
        ref_rows, ref_cols = np.nonzero(out.image[..., k] > 127)
        assert abs(rows.mean() - ref_rows.mean()) < 1.0 and abs(cols.mean() - ref_cols.mean()) < 1.0


def test_fit_size_matches_the_official_rounding() -> None:
    assert fit_size(2848, 4288, (960, 1440)) == (956, 1440)
    sample = Sample(np.zeros((2848 // 8, 4288 // 8, 3), np.uint8), np.zeros((1, 356, 536), np.uint8))
    out = ResizeToFit((120, 180))(sample, np.random.default_rng(0))
    assert out.image.shape == (120, 180, 3) and out.target.shape == (1, 120, 180)


def test_photometric_jitter_changes_colours_not_geometry() -> None:
    sample = pattern_sample()
    sample = Sample(np.clip(sample.image.astype(int) // 2 + 60, 0, 255).astype(np.uint8), sample.target)
    changed = 0
    for seed in range(8):
        out = PhotometricJitter()(sample, np.random.default_rng(seed))
        assert np.array_equal(out.target, sample.target)
        changed += not np.array_equal(out.image, sample.image)
        # A per-pixel colour map: equal input colours give equal output colours.
        colours = sample.image.reshape(-1, 3)
        mapped = out.image.reshape(-1, 3)
        for colour in np.unique(colours, axis=0):
            assert len(np.unique(mapped[(colours == colour).all(axis=1)], axis=0)) == 1
    assert changed >= 6


def test_full_pipeline_is_seeded_and_aligned() -> None:
    config = AugmentConfig(resize=[60, 90], crop=[48, 64], photometric=False)
    pipeline = training_transform(config)
    sample = pattern_sample()
    first = pipeline(sample, np.random.default_rng([7, 3, 1]))
    again = pipeline(sample, np.random.default_rng([7, 3, 1]))
    assert np.array_equal(first.image, again.image) and np.array_equal(first.target, again.target)
    assert first.image.shape == (48, 64, 3)
    assert_aligned(first, tolerance=0.08)


def test_lesion_centred_crop_aims_at_each_present_class_equally_and_stays_aligned() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((300, 500, 3), np.uint8)
    target = np.zeros((3, 300, 500), np.uint8)
    target[0, 0:150, 0:250] = 1  # a large lesion
    target[2, 290, 495] = 1  # one pixel in the corner: must still be reached
    image[..., 0] = target[0] * 255
    image[290, 495, 2] = 255
    crop = LesionCentredCrop(64, 64, probability=1.0)
    hits = np.zeros(3)
    for _ in range(400):
        sample = crop(Sample(image, target), rng)
        assert sample.image.shape == (64, 64, 3) and sample.target.shape == (3, 64, 64)
        assert np.array_equal(sample.image[..., 0] == 255, sample.target[0] == 1)
        assert np.array_equal(sample.image[..., 2] == 255, sample.target[2] == 1)
        hits += sample.target.reshape(3, -1).any(axis=1)
    assert hits[1] == 0 and 0.4 < hits[2] / 400 < 0.6 and hits[0] / 400 > 0.45


def test_lesion_centred_crop_falls_back_to_random_crops() -> None:
    empty = Sample(np.zeros((40, 50, 3), np.uint8), np.zeros((2, 40, 50), np.uint8))
    sample = LesionCentredCrop(64, 64, probability=1.0)(empty, np.random.default_rng(0))
    assert sample.image.shape == (64, 64, 3)  # padded, as RandomCrop pads
    indices = np.zeros((1, 100, 100), np.uint8)
    indices[0, 99, 0] = 2  # class-index maps (softmax targets) work too
    hit = LesionCentredCrop(10, 10, probability=1.0)(Sample(np.zeros((100, 100, 3), np.uint8), indices), np.random.default_rng(1))
    assert hit.target.max() == 2
    never = LesionCentredCrop(10, 10, probability=0.0)
    assert sum(never(Sample(np.zeros((100, 100, 3), np.uint8), indices), np.random.default_rng(s)).target.max() > 0 for s in range(50)) < 5


def test_config_turns_on_lesion_centred_crops() -> None:
    steps = training_transform(AugmentConfig(crop=[32, 32], lesion_crop=0.5)).transforms
    assert any(isinstance(step, LesionCentredCrop) and step.probability == 0.5 for step in steps)
    assert not any(isinstance(step, LesionCentredCrop) for step in training_transform(AugmentConfig(crop=[32, 32])).transforms)
