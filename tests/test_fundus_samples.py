"""``fundus_lesions``: exact ground truth, lesion sizes and colours, determinism, cache, IDRiD layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.idrid_masks import idrid_image_path, idrid_mask_path, read_idrid_mask
from sample_data import fundus_variants
from sample_data.fundus_samples import (
    GENERATOR_VERSION,
    FundusSample,
    fundus_lesions,
    generate_fundus_sample,
    labels_from_masks,
    lesion_free_image,
    write_fundus_dataset,
)
from sample_data.skimage_samples import retina

SIZE_RANGES = {"MA": (3.0, 12.0), "HE": (10.0, 100.0), "EX": (2.0, 40.0), "SE": (20.0, 80.0)}
EIGHT_CONNECTED = np.ones((3, 3), bool)
TRAIN = "a. Training Set"


@pytest.fixture(scope="module")
def samples() -> dict[tuple[int, int], FundusSample]:
    """(index, seed) -> sample: the unmodified photograph, a variant without SE (1, 0) and one with (1, 1)."""
    return {key: generate_fundus_sample(*key) for key in [(0, 0), (1, 0), (1, 1)]}


def lesion_union(sample: FundusSample) -> np.ndarray:
    return np.logical_or.reduce(list(sample.masks.values()))


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndi.label(mask, EIGHT_CONNECTED)


def test_canonical_sample_is_the_real_photograph_outside_the_masks(samples) -> None:
    sample = samples[(0, 0)]
    assert sample.image.shape == (1411, 1411, 3) and sample.image.dtype == np.uint8
    assert list(sample.masks) == ["EX", "HE", "SE", "MA"]
    assert all(mask.dtype == np.bool_ and mask.any() for mask in sample.masks.values())
    base = retina()
    union = lesion_union(sample)
    np.testing.assert_array_equal(sample.image[~union], base[~union])
    changed = np.any(sample.image != base, axis=-1)
    assert changed[union].mean() > 0.9  # the masks are where the lesions were drawn


@pytest.mark.parametrize("key", [(1, 0), (1, 1)])
def test_variant_equals_its_lesion_free_photograph_outside_the_masks(samples, key) -> None:
    sample = samples[key]
    plain = lesion_free_image(*key)
    assert plain.shape == sample.image.shape and plain.shape != (1411, 1411, 3)  # the variant was resized
    union = lesion_union(sample)
    np.testing.assert_array_equal(sample.image[~union], plain[~union])
    assert np.any(sample.image != plain, axis=-1)[union].mean() > 0.9


@pytest.mark.parametrize("key", [(0, 0), (1, 0), (1, 1)])
def test_lesion_sizes_are_within_the_stated_ranges(samples, key) -> None:
    sample = samples[key]
    for code, (low, high) in SIZE_RANGES.items():
        labels, count = components(sample.masks[code])
        if code != "SE":
            assert count >= 3, code
        areas = np.bincount(labels.ravel())[1:]
        diameters = np.sqrt(4 * areas / math.pi)
        assert np.all((diameters >= low) & (diameters <= high)), (code, diameters.min(), diameters.max())


def test_soft_exudates_only_in_some_images(samples) -> None:
    assert samples[(1, 1)].masks["SE"].any()
    assert not samples[(1, 0)].masks["SE"].any()


def test_microaneurysms_are_clustered(samples) -> None:
    """Most microaneurysms have another one within 60 px (real MA come in groups)."""
    labels, count = components(samples[(0, 0)].masks["MA"])
    centres = np.array(ndi.center_of_mass(labels > 0, labels, range(1, count + 1)))
    distances = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distances, np.inf)
    assert (distances.min(axis=1) < 60).mean() > 0.5


def local_contrast(sample: FundusSample, code: str) -> np.ndarray:
    """Per lesion of ``code``: mean RGB inside and in a 2–8 px ring of untouched background, (N, 2, 3)."""
    image = sample.image.astype(np.float64)
    union = lesion_union(sample)
    labels, count = components(sample.masks[code])
    pairs = []
    for index, window in enumerate(ndi.find_objects(labels), start=1):
        grown = tuple(slice(max(0, s.start - 8), s.stop + 8) for s in window)
        lesion = labels[grown] == index
        ring = ndi.binary_dilation(lesion, iterations=8) & ~ndi.binary_dilation(lesion, iterations=2)
        ring &= ~union[grown]
        if ring.sum() >= 10:
            pairs.append((image[grown][lesion].mean(0), image[grown][ring].mean(0)))
    return np.array(pairs)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("key", [(0, 0), (1, 1)])
def test_lesion_colours_against_the_local_background(samples, key) -> None:
    sample = samples[key]
    for code in ("MA", "HE"):  # darker and redder (green falls more than red)
        inside, ring = local_contrast(sample, code).transpose(1, 0, 2)
        assert np.all(luminance(inside) < luminance(ring) - 3), code
        assert np.all(inside[:, 0] / inside[:, 1] > ring[:, 0] / ring[:, 1]), code
    inside, ring = local_contrast(sample, "EX").transpose(1, 0, 2)  # brighter and yellower
    assert np.all(luminance(inside) > luminance(ring) + 3)
    assert np.all(inside[:, 1] / inside[:, 0] > ring[:, 1] / ring[:, 0])
    inside, ring = local_contrast(sample, "SE").transpose(1, 0, 2)  # brighter and paler (less saturated)
    saturation = lambda rgb: (rgb.max(-1) - rgb.min(-1)) / rgb.max(-1)  # noqa: E731
    assert np.all(luminance(inside) > luminance(ring) + 3)
    assert np.all(saturation(inside) < saturation(ring))


def test_lesions_are_inside_the_field_of_view_and_off_the_optic_disc(samples) -> None:
    rows, cols = np.nonzero(lesion_union(samples[(0, 0)]))
    fov_row, fov_col = fundus_variants.RETINA_FIELD_OF_VIEW_CENTRE
    assert np.hypot(rows - fov_row, cols - fov_col).max() < fundus_variants.RETINA_FIELD_OF_VIEW_RADIUS
    disc_row, disc_col = fundus_variants.RETINA_OPTIC_DISC
    assert np.hypot(rows - disc_row, cols - disc_col).min() >= fundus_variants.RETINA_OPTIC_DISC_KEEP_OUT
    # The landmarks are right: the optic disc is the brightest place, the fovea darker than the field.
    lum = luminance(retina().astype(np.float64))
    yy, xx = np.ogrid[:1411, :1411]
    near = lambda centre, r: np.hypot(yy - centre[0], xx - centre[1]) < r  # noqa: E731
    field = near(fundus_variants.RETINA_FIELD_OF_VIEW_CENTRE, 600)
    assert lum[near(fundus_variants.RETINA_OPTIC_DISC, 60)].mean() > lum[field].mean() + 40
    assert lum[near(fundus_variants.RETINA_FOVEA, 25)].mean() < lum[field].mean() - 10


def test_labels_follow_the_masks_with_small_lesions_winning(samples) -> None:
    sample = samples[(0, 0)]
    for cls in FUNDUS_CLASSES:
        assert np.all(sample.labels[sample.masks[cls.code]] == cls.label)
    assert np.all(sample.labels[~lesion_union(sample)] == 0)

    overlapping = {code: np.zeros((1, 5), bool) for code in ("EX", "HE", "SE", "MA")}
    overlapping["EX"][0, :] = True
    overlapping["HE"][0, 1:] = True
    overlapping["SE"][0, 2:] = True
    overlapping["MA"][0, 3:] = True
    assert labels_from_masks(overlapping).tolist() == [[1, 2, 3, 4, 4]]


def test_generation_is_deterministic(samples) -> None:
    again = generate_fundus_sample(1, 0)
    np.testing.assert_array_equal(again.image, samples[(1, 0)].image)
    for code, mask in again.masks.items():
        np.testing.assert_array_equal(mask, samples[(1, 0)].masks[code])
    assert again.name == samples[(1, 0)].name
    assert samples[(1, 0)].name != samples[(1, 1)].name
    assert not np.array_equal(samples[(1, 0)].image, samples[(1, 1)].image)  # different seed, different sample


def test_scale_resizes_photograph_and_lesions() -> None:
    small = generate_fundus_sample(0, 0, scale=0.5)
    assert small.image.shape == (706, 706, 3)
    labels, count = components(small.masks["HE"])
    diameters = np.sqrt(4 * np.bincount(labels.ravel())[1:] / math.pi)
    assert count >= 3 and diameters.max() <= 50.0 and diameters.min() >= 5.0


def test_cached_on_first_use_and_reused(private_cache: Path, samples) -> None:
    first = fundus_lesions(0, 0)
    cached = list((private_cache / "fundus_lesions").glob("*.npz"))
    assert len(cached) == 1 and f"v{GENERATOR_VERSION}_" in cached[0].name
    np.testing.assert_array_equal(first.image, samples[(0, 0)].image)
    np.testing.assert_array_equal(first.labels, samples[(0, 0)].labels)

    # The cache is what is read: a changed cached image comes back as it is.
    with np.load(cached[0]) as stored:
        content = dict(stored)
    content["image"] = np.zeros_like(content["image"])
    with open(cached[0], "wb") as handle:
        np.savez_compressed(handle, **content)
    reused = fundus_lesions(0, 0)
    assert not reused.image.any()
    np.testing.assert_array_equal(reused.masks["MA"], samples[(0, 0)].masks["MA"])

    # A damaged cache file is regenerated.
    cached[0].write_bytes(b"damaged")
    np.testing.assert_array_equal(fundus_lesions(0, 0).image, samples[(0, 0)].image)


def test_dataset_in_idrid_layout(tmp_path: Path, samples) -> None:
    root = write_fundus_dataset(tmp_path / "synthetic", 2, seed=0)
    names = ["fundus_lesions_0_000", "fundus_lesions_0_001"]
    jpegs = sorted(p.name for p in (root / "1. Original Images" / TRAIN).iterdir())
    assert jpegs == [f"{name}.jpg" for name in names]
    groundtruth = root / "2. All Segmentation Groundtruths" / TRAIN
    masks = sorted(p.relative_to(groundtruth).as_posix() for p in root.rglob("*.tif"))
    folders = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates"}
    expected = [f"{folders[code]}/{name}_{code}.tif" for code in folders for name in names]
    assert masks == sorted(expected + ["4. Soft Exudates/fundus_lesions_0_000_SE.tif"])  # SE only where present

    second = samples[(1, 0)]
    for code in ("MA", "HE", "EX"):
        np.testing.assert_array_equal(read_idrid_mask(idrid_mask_path(root, TRAIN, names[1], code)), second.masks[code])
    decoded = np.asarray(Image.open(idrid_image_path(root, TRAIN, names[1])))
    assert decoded.shape == second.image.shape
    assert np.abs(decoded.astype(int) - second.image).mean() < 3.0
    assert not list(root.rglob(".*"))  # no temporary files left behind


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda root: write_fundus_dataset(root, -1), "number of images must be an integer from 0"),
        (lambda root: write_fundus_dataset(root, 2.5), "number of images must be an integer"),
        (lambda root: write_fundus_dataset(root, 1, scale=1000.0), "scale must be a number from 0.5 to 4.0"),
        (lambda root: write_fundus_dataset(root, 1, split="a/b"), "split must be one folder name"),
        (lambda root: generate_fundus_sample(0, 0, scale=float("nan")), "scale must be a number"),
        (lambda root: generate_fundus_sample(0, 0, scale=0.0), "scale must be a number"),
        (lambda root: generate_fundus_sample(-1, 0), "index must be a non-negative integer"),
        (lambda root: fundus_lesions(0, -3), "seed must be a non-negative integer"),
    ],
)
def test_impossible_arguments_are_one_line_user_errors(tmp_path: Path, call, message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        call(tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_unwritable_dataset_folder_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "occupied"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write the image"):
        write_fundus_dataset(blocker, 1)


def test_variant_geometry_moves_image_vessels_and_landmarks_together() -> None:
    base = fundus_variants.base_fundus()
    rng = np.random.default_rng(0)
    mirrored = fundus_variants.apply_variant(base, fundus_variants.FundusVariant(flip_lr=True), rng)
    np.testing.assert_array_equal(mirrored.image, base.image[:, ::-1])
    np.testing.assert_array_equal(mirrored.geometry.vessels, base.geometry.vessels[:, ::-1])
    assert mirrored.geometry.optic_disc == (650.0, 1410 - 225.0)  # a right eye now

    turned = fundus_variants.apply_variant(base, fundus_variants.FundusVariant(rotation_deg=90.0), rng)
    assert np.abs(turned.image.astype(int) - np.rot90(base.image)).max() <= 1  # counter-clockwise
    assert turned.geometry.optic_disc == pytest.approx((1410 - 225.0, 650.0))

    halved = fundus_variants.apply_variant(base, fundus_variants.FundusVariant(scale=0.5), rng)
    assert halved.image.shape == (706, 706, 3)
    assert halved.geometry.field_of_view_radius == pytest.approx(349.0)
    disc = np.round(halved.geometry.optic_disc).astype(int)
    assert halved.image[disc[0], disc[1]].mean() > 150  # still on the bright optic disc
