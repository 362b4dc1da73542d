"""Dataset layouts (IDRiD, DDR, plain folder): finding ground truth, label maps, bad datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.datasets import (
    find_ground_truth,
    find_ground_truth_set,
    labels_to_masks,
    list_dataset,
    load_ground_truth,
    read_binary_mask,
)
from napari_m2mrf.io.idrid_masks import read_idrid_mask, write_idrid_mask

LABEL = {cls.code: cls.label for cls in FUNDUS_CLASSES}
SHAPE = (48, 64)


def _photo(path: Path, shape: tuple[int, int] = SHAPE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), 90, np.uint8)).save(path)
    return path


def _mask(code: str, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A distinct small square per class, with EX and MA overlapping at one pixel block."""
    mask = np.zeros(shape, bool)
    top = 4 + 8 * list(LABEL).index(code)
    mask[top : top + 6, top : top + 10] = True
    return mask


def test_real_idrid_ground_truth(shared_data: Path) -> None:
    image = shared_data / "idrid_subset" / "1. Original Images" / "a. Training Set" / "IDRiD_03.jpg"
    files = find_ground_truth(image)
    assert files is not None and files.layout == "idrid"
    assert set(files.masks) == {"EX", "HE", "SE", "MA"}  # IDRiD_03 is one of the two with SE
    labels = load_ground_truth(files, (2848, 4288))
    for code in ("EX", "HE", "SE"):
        mask = read_idrid_mask(files.masks[code])
        # Where no later class covers it, each class's pixels carry its label.
        assert np.all(labels[mask] >= LABEL[code])
        assert np.count_nonzero(labels == LABEL[code]) > 0
    assert np.count_nonzero(labels == LABEL["MA"]) == np.count_nonzero(read_idrid_mask(files.masks["MA"]))


def test_real_idrid_without_soft_exudates(shared_data: Path) -> None:
    image = shared_data / "idrid_subset" / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg"
    files = find_ground_truth(image)
    assert set(files.masks) == {"EX", "HE", "MA"}
    samples = list_dataset(shared_data / "idrid_subset")
    assert len(samples) == 10 and {s.split for s in samples} == {"a. Training Set"}


def test_ddr_layout(tmp_path: Path) -> None:
    root = tmp_path / "DDR-dataset" / "lesion_segmentation"
    image = _photo(root / "valid" / "image" / "007-0001-100.jpg")
    for code in ("EX", "HE", "MA", "SE"):
        folder = root / "valid" / "label" / code
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / "007-0001-100.tif", _mask(code).astype(np.uint8) * 255)  # DDR: 8-bit 0/255
    labels = load_ground_truth(find_ground_truth(image), SHAPE)
    for code in ("EX", "HE", "SE", "MA"):
        assert np.all(labels[_mask(code)] == LABEL[code])
    assert [s.image for s in list_dataset(tmp_path / "DDR-dataset")] == [image]


def test_plain_folder_layout_with_png_masks(tmp_path: Path) -> None:
    image = _photo(tmp_path / "images" / "eye.png")
    (tmp_path / "masks" / "HE").mkdir(parents=True)
    Image.fromarray(_mask("HE").astype(np.uint8) * 255).save(tmp_path / "masks" / "HE" / "eye.png")
    files = find_ground_truth(image)
    assert files.layout == "folder" and set(files.masks) == {"HE"}
    labels = load_ground_truth(files, SHAPE)
    assert set(np.unique(labels)) == {0, LABEL["HE"]}


def test_labels_round_trip_through_idrid_masks(tmp_path: Path) -> None:
    root = tmp_path / "idrid"
    image = _photo(root / "1. Original Images" / "b. Testing Set" / "IDRiD_99.jpg")
    from napari_m2mrf.io.idrid_masks import idrid_mask_path

    labels = np.zeros(SHAPE, np.uint8)
    for code in ("EX", "HE", "MA"):
        labels[_mask(code)] = LABEL[code]
    for code, mask in labels_to_masks(labels).items():
        if mask.any():
            write_idrid_mask(idrid_mask_path(root, "b. Testing Set", "IDRiD_99", code), mask)
    assert np.array_equal(load_ground_truth(find_ground_truth(image), SHAPE), labels)


def test_image_outside_any_layout_has_no_ground_truth(tmp_path: Path) -> None:
    assert find_ground_truth(_photo(tmp_path / "somewhere" / "eye.jpg")) is None


def test_dataset_with_missing_masks_names_the_image(tmp_path: Path) -> None:
    _photo(tmp_path / "images" / "a.png")
    lonely = _photo(tmp_path / "images" / "b.png")
    (tmp_path / "masks" / "EX").mkdir(parents=True)
    Image.fromarray(_mask("EX").astype(np.uint8)).save(tmp_path / "masks" / "EX" / "a.png")
    with pytest.raises(UserError, match=f"{lonely}: no ground-truth mask"):
        list_dataset(tmp_path)


def test_mask_of_another_size_names_the_mask(tmp_path: Path) -> None:
    image = _photo(tmp_path / "images" / "eye.png")
    (tmp_path / "masks" / "MA").mkdir(parents=True)
    wrong = tmp_path / "masks" / "MA" / "eye.png"
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(wrong)
    with pytest.raises(UserError, match=r"eye\.png: the mask is 30×30 pixels but the image eye\.png is 64×48"):
        load_ground_truth(find_ground_truth(image), SHAPE)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no images found"):
        list_dataset(tmp_path)


def test_from_an_image_or_from_the_masks_the_same_files_are_found(tmp_path: Path) -> None:
    root = tmp_path / "DDR" / "lesion_segmentation"
    images = [_photo(root / "test" / "image" / f"{stem}.jpg") for stem in ("007-1", "007-2")]
    for code in ("EX", "MA"):
        (root / "test" / "label" / code).mkdir(parents=True)
        for image in images:  # DDR's own names, and <stem>_<CODE> names
            name = f"{image.stem}.tif" if code == "EX" else f"{image.stem}_{code}.tif"
            tifffile.imwrite(root / "test" / "label" / code / name, _mask(code).astype(np.uint8))
    found = find_ground_truth_set(tmp_path / "DDR", split="test")
    assert found.layout == "ddr" and found.split == "test" and set(found.class_folders) == {"EX", "MA"}
    assert [image.stem for image in found.images] == ["007-1", "007-2"]
    for image, from_masks in zip(images, found.images):
        assert find_ground_truth(image).masks == from_masks.masks
    assert find_ground_truth_set(root / "test").split is None  # the split folder itself


def test_sixteen_bit_png_mask_with_ones_keeps_its_lesions(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(_mask("HE").astype(np.uint16)).save(path)
    np.testing.assert_array_equal(read_binary_mask(path), _mask("HE"))


def test_ground_truth_folder_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such ground-truth folder"):
        find_ground_truth_set(tmp_path / "absent")
    with pytest.raises(UserError, match="no ground truth found: expected IDRiD"):
        find_ground_truth_set(tmp_path)
    (tmp_path / "masks" / "EX").mkdir(parents=True)
    with pytest.raises(UserError, match="the class folders hold no masks"):
        find_ground_truth_set(tmp_path)
