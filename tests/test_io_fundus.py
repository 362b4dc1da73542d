"""Reading photographs: formats, bit depths, channels, orientation, and the fundus/slide decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_m2mrf.io.formats import inspect_source, sniff_format
from napari_m2mrf.io.photographs import apply_orientation, read_image

_Y, _X = np.mgrid[0:40, 0:64]
RGB = np.dstack([_X * 4, _Y * 6, (_X + _Y) * 2]).astype(np.uint8)  # smooth, so JPEG stays close


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".tif"])
def test_rgb8_in_every_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"image{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, RGB, photometric="rgb")
    else:
        Image.fromarray(RGB).save(path, quality=98)
    loaded = read_image(path)
    assert loaded.data.shape == (40, 64, 3) and loaded.data.dtype == np.uint8
    tolerance = 3 if suffix == ".jpg" else 0  # JPEG is lossy
    assert np.abs(loaded.data.astype(int) - RGB).mean() <= tolerance
    assert loaded.notices == []
    assert inspect_source(path).kind == "fundus"


def test_grey_is_expanded_to_rgb(tmp_path: Path) -> None:
    grey = RGB[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    data = read_image(tmp_path / "grey.png").data
    assert data.shape == (40, 64, 3)
    assert all(np.array_equal(data[..., c], grey) for c in range(3))


def test_rgba_drops_alpha_with_a_notice(tmp_path: Path) -> None:
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    loaded = read_image(tmp_path / "rgba.png")
    assert np.array_equal(loaded.data, RGB)
    assert any("alpha" in notice for notice in loaded.notices)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_is_scaled_to_8_bit(tmp_path: Path, suffix: str) -> None:
    sixteen = RGB.astype(np.uint16) * 257
    path = tmp_path / f"deep{suffix}"
    if suffix == ".png":
        Image.fromarray(sixteen[..., 0]).save(path)  # Pillow writes 16-bit grey PNGs
        expected = np.repeat(RGB[..., :1], 3, axis=2)
    else:
        tifffile.imwrite(path, sixteen, photometric="rgb")
        expected = RGB
    loaded = read_image(path)
    assert np.array_equal(loaded.data, expected)
    assert any("16-bit" in notice for notice in loaded.notices)


def test_float_tiff_in_unit_range(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "float.tif", RGB.astype(np.float32) / 255, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "float.tif").data, RGB)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    """A JPEG's EXIF orientation is applied (Pillow's reference); a TIFF's tag gives the same result."""
    image = np.zeros((48, 80, 3), np.uint8)
    image[:16, :32] = (255, 0, 0)  # a red block in the top-left corner marks the orientation
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpeg = tmp_path / "oriented.jpg"
    Image.fromarray(image).save(jpeg, exif=exif, quality=95)
    from_jpeg = read_image(jpeg).data
    expected_shape = (80, 48, 3) if orientation >= 5 else (48, 80, 3)
    assert from_jpeg.shape == expected_shape
    assert np.array_equal(apply_orientation(image, orientation).shape, expected_shape)
    red = (from_jpeg[..., 0] > 128) & (from_jpeg[..., 1] < 100)
    assert np.array_equal(red, apply_orientation(image, orientation)[..., 0] > 128)
    tiff = tmp_path / "oriented.tif"
    tifffile.imwrite(tiff, image, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    assert np.array_equal(read_image(tiff).data, apply_orientation(image, orientation))


def test_content_decides_not_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(RGB).save(path, format="PNG")
    assert sniff_format(path) == "png"
    assert np.array_equal(read_image(path).data, RGB)


def test_pyramid_or_large_image_is_a_slide(tmp_path: Path) -> None:
    pyramid = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(np.zeros((256, 256, 3), np.uint8), tile=(64, 64), subifds=1, photometric="rgb")
        tif.write(np.zeros((128, 128, 3), np.uint8), tile=(64, 64), subfiletype=1, photometric="rgb")
    assert inspect_source(pyramid).kind == "slide"
    large = tmp_path / "large.tif"
    tifffile.imwrite(large, np.zeros((8192, 6144), np.uint8), tile=(512, 512), compression="zlib")
    assert inspect_source(large).kind == "slide"


def test_real_idrid_photograph(shared_data: Path) -> None:
    path = shared_data / "idrid_subset" / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg"
    loaded = read_image(path)
    assert loaded.data.shape == (2848, 4288, 3)
    assert 20 < loaded.data.mean() < 200
