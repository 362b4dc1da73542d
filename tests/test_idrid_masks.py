"""IDRiD mask format: reading the real masks, writing the same TIFF structure, naming, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.idrid_masks import (
    idrid_image_path,
    idrid_mask_path,
    read_idrid_mask,
    write_idrid_mask,
)

TRAIN = "a. Training Set"
# Pixel counts from ../shared/data/README.md (MA, HE, EX, OD; IDRiD_01 and IDRiD_10 have no SE mask).
README_COUNTS = {
    "IDRiD_01": {"MA": 6941, "HE": 35430, "EX": 113290, "OD": 213851},
    "IDRiD_10": {"MA": 33484, "HE": 92658, "EX": 805259, "OD": 214988},
}
OFFSET_TAGS = {"StripOffsets", "StripByteCounts", "RowsPerStrip", "ImageWidth", "ImageLength"}


@pytest.fixture(scope="module")
def idrid_root(shared_data: Path) -> Path:
    root = shared_data / "idrid_subset"
    if not root.is_dir():
        pytest.skip("IDRiD subset is absent")
    return root


def tiff_structure(path: Path) -> dict:
    """Byte order, page count and every tag's (type, count, value) except offsets and sizes."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        tags = {
            tag.name: (int(tag.dtype), tag.count, None if tag.name in OFFSET_TAGS else np.asarray(tag.value).tolist())
            for tag in page.tags.values()
        }
        return {
            "byteorder": tif.byteorder,
            "bigtiff": tif.is_bigtiff,
            "pages": len(tif.pages),
            "first_strip_offset": page.dataoffsets[0],
            "tags": tags,
        }


@pytest.mark.parametrize("stem", sorted(README_COUNTS))
def test_real_masks_have_the_readme_pixel_counts(idrid_root: Path, stem: str) -> None:
    for code, expected in README_COUNTS[stem].items():
        mask = read_idrid_mask(idrid_mask_path(idrid_root, TRAIN, stem, code))
        assert mask.dtype == np.bool_ and mask.shape == (2848, 4288)
        assert int(mask.sum()) == expected, code
    assert not idrid_mask_path(idrid_root, TRAIN, stem, "SE").exists()
    assert idrid_image_path(idrid_root, TRAIN, stem).is_file()


def test_writer_reproduces_the_real_file_structure_and_pixels(idrid_root: Path, tmp_path: Path) -> None:
    real = idrid_mask_path(idrid_root, TRAIN, "IDRiD_01", "HE")
    mask = read_idrid_mask(real)
    ours = write_idrid_mask(tmp_path / "IDRiD_01_HE.tif", mask)

    assert tiff_structure(ours) == tiff_structure(real)
    with tifffile.TiffFile(real) as a, tifffile.TiffFile(ours) as b:
        assert a.pages.first.databytecounts == b.pages.first.databytecounts
        assert a.pages.first.tags["RowsPerStrip"].value == b.pages.first.tags["RowsPerStrip"].value == 15
    # Header and pixel strips are byte-identical; the IFD follows the pixels as in IrfanView's files.
    real_bytes, our_bytes = real.read_bytes(), ours.read_bytes()
    pixel_end = 8 + 2848 * 4288 // 8
    assert our_bytes[:pixel_end] == real_bytes[:pixel_end]
    np.testing.assert_array_equal(read_idrid_mask(ours), mask)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (300, 37), (40, 4288)])
def test_round_trip_of_odd_shapes(tmp_path: Path, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < 0.3
    path = write_idrid_mask(tmp_path / "m.tif", mask)
    np.testing.assert_array_equal(read_idrid_mask(path), mask)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.bitspersample == 1
        assert page.compression == tifffile.COMPRESSION.NONE
        np.testing.assert_array_equal(page.asarray().astype(bool), mask)
        colormap = page.colormap
        assert colormap[:, 0].tolist() == [0, 0, 0] and colormap[:, 1].tolist() == [65535, 0, 0]
        assert page.offset % 2 == 0  # the IFD is word-aligned even when the pixel bytes are odd


def test_integer_zero_one_masks_are_accepted(tmp_path: Path) -> None:
    mask = np.zeros((5, 9), np.uint8)
    mask[2, 3:7] = 1
    np.testing.assert_array_equal(read_idrid_mask(write_idrid_mask(tmp_path / "m.tif", mask)), mask == 1)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "IDRiD_99_MA.tif"
    first = np.eye(16, dtype=bool)
    write_idrid_mask(target, first)
    with pytest.raises(UserError, match="IDRiD_99_MA.tif"):
        write_idrid_mask(target, np.full((16, 16), 0.5))
    np.testing.assert_array_equal(read_idrid_mask(target), first)
    write_idrid_mask(target, ~first)
    np.testing.assert_array_equal(read_idrid_mask(target), ~first)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_naming_follows_idrid_layout(tmp_path: Path) -> None:
    path = idrid_mask_path(tmp_path, TRAIN, "IDRiD_07", "se")
    assert path == tmp_path / "2. All Segmentation Groundtruths" / TRAIN / "4. Soft Exudates" / "IDRiD_07_SE.tif"
    assert idrid_image_path(tmp_path, TRAIN, "IDRiD_07") == tmp_path / "1. Original Images" / TRAIN / "IDRiD_07.jpg"
    with pytest.raises(UserError, match="unknown IDRiD class code 'XX'"):
        idrid_mask_path(tmp_path, TRAIN, "IDRiD_07", "XX")


def test_not_a_tiff_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("not an image")
    with pytest.raises(UserError, match=r"notes\.tif: not a readable TIFF"):
        read_idrid_mask(path)
    with pytest.raises(UserError, match="no such mask file"):
        read_idrid_mask(tmp_path / "missing.tif")


def test_truncated_files_are_user_errors(tmp_path: Path) -> None:
    whole = write_idrid_mask(tmp_path / "whole.tif", np.ones((64, 64), bool)).read_bytes()
    cut_header = tmp_path / "cut_header.tif"
    cut_header.write_bytes(whole[:6])
    cut_ifd = tmp_path / "cut_ifd.tif"
    cut_ifd.write_bytes(whole[:-40])
    for path in (cut_header, cut_ifd):
        with pytest.raises(UserError, match=path.name):
            read_idrid_mask(path)

    # A TIFF whose directory comes first and whose pixel strip is cut short.
    strips_last = tmp_path / "strips_last.tif"
    tifffile.imwrite(strips_last, np.ones((64, 64), np.uint8))
    with tifffile.TiffFile(strips_last) as tif:
        data_end = tif.pages.first.dataoffsets[-1] + tif.pages.first.databytecounts[-1]
    strips_last.write_bytes(strips_last.read_bytes()[: data_end - 100])
    with pytest.raises(UserError, match=r"strips_last\.tif: truncated"):
        read_idrid_mask(strips_last)


@pytest.mark.parametrize(
    ("array", "problem"),
    [(np.zeros((8, 8), np.float32), "float32"), (np.zeros((8, 8, 3), np.uint8), "single-channel")],
)
def test_wrong_pixel_types_are_user_errors(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    path = tmp_path / "wrong.tif"
    tifffile.imwrite(path, array, photometric="rgb" if array.ndim == 3 else "minisblack")
    with pytest.raises(UserError, match=rf"wrong\.tif: .*{problem}"):
        read_idrid_mask(path)


@pytest.mark.parametrize(
    ("mask", "problem"),
    [(np.zeros((4, 4, 2), bool), "2-D"), (np.zeros((0, 4), bool), "2-D"), (np.full((4, 4), 2), "bool")],
)
def test_writer_rejects_non_binary_masks(tmp_path: Path, mask: np.ndarray, problem: str) -> None:
    with pytest.raises(UserError, match=problem):
        write_idrid_mask(tmp_path / "bad.tif", mask)
    assert not (tmp_path / "bad.tif").exists()


def test_unwritable_folder_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a file, not a folder"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write the mask"):
        write_idrid_mask(blocker / "IDRiD_01_MA.tif", np.zeros((4, 4), bool))
