"""Reading photographs (fundus images) into memory as ``(Y, X, 3)`` uint8 RGB.

JPEG, PNG, BMP and TIFF; 8- or 16-bit; grey, RGB or RGBA (alpha dropped, with a notice); float
images in 0..1 or 0..255; EXIF/TIFF orientation applied. Anything else is a ``UserError`` that
names the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.formats import FUNDUS_MAX_PIXELS, sniff_format
from napari_m2mrf.io.pixels import to_rgb8

MIN_SIDE = 16


@dataclass
class LoadedImage:
    """An image in memory: ``data`` ``(Y, X, 3)`` uint8 RGB, and what was changed on the way in."""

    data: np.ndarray
    path: Path
    notices: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem


def pillow_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from the header of a JPEG/PNG/BMP, without decoding the pixels.

    Goes through the read-side gate (:func:`~napari_m2mrf.io.input_gate.pil_header`): a file that is
    not regular, or declares more than ``max_image_pixels``, is refused before decoding.
    """
    from napari_m2mrf.io.input_gate import pil_header

    width, height, _ = pil_header(path)
    return width, height


def read_image(
    path: str | os.PathLike[str], max_pixels: int = FUNDUS_MAX_PIXELS, min_side: int = MIN_SIDE
) -> LoadedImage:
    """Decode the image at ``path`` to ``(Y, X, 3)`` uint8 RGB (orientation applied).

    Raises ``UserError`` naming the file for unreadable, truncated, too small (< ``min_side`` px a
    side), too large (> ``max_pixels``), NaN-holding or unsupported-type images.
    """
    path = Path(path)
    found = sniff_format(path)
    if found is None or found == "zarr":
        raise UserError(f"{path}: not a JPEG, PNG, BMP or TIFF image (the content does not match)")
    notices: list[str] = []
    if found == "tiff":
        from napari_m2mrf.io.tiff import inspect_tiff, read_tiff_image

        height, width, _, _ = inspect_tiff(path)
        _check_size(path, height, width, max_pixels, min_side)
        pixels, orientation = read_tiff_image(path)
        pixels = apply_orientation(pixels, orientation)
    else:
        width, height = pillow_size(path)
        _check_size(path, height, width, max_pixels, min_side)
        pixels = _decode_with_pillow(path, notices)
    return LoadedImage(to_rgb8(pixels, str(path), notices, path.name), path, notices)


def _check_size(path: Path, height: int, width: int, max_pixels: int, min_side: int) -> None:
    if min(height, width) < min_side:
        raise UserError(f"{path}: the image is {width}×{height} pixels; at least {min_side}×{min_side} are needed")
    if height * width > max_pixels:
        raise UserError(
            f"{path}: the image is {width}×{height} pixels, too large to load at once; open it as a slide "
            "or convert it with 'napari-m2mrf convert'"
        )


def _decode_with_pillow(path: Path, notices: list[str]) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    from napari_m2mrf.io.input_gate import pil_pixel_limit
    from napari_m2mrf.io.limits import current_limits

    try:
        with warnings.catch_warnings(), pil_pixel_limit(current_limits().max_image_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                oriented = ImageOps.exif_transpose(image)
                mode = oriented.mode
                if mode in ("P", "PA"):
                    oriented = oriented.convert("RGBA" if "transparency" in oriented.info or mode == "PA" else "RGB")
                elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    oriented = oriented.convert("RGB")
                elif mode == "1":
                    oriented = oriented.convert("L")
                return np.asarray(oriented)
    except PermissionError:
        raise UserError(f"{path}: permission denied (cannot read the file)") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: the image cannot be decoded ({exc})") from None


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn ``pixels`` (Y, X[, C]) upright according to an EXIF/TIFF orientation code (1..8)."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return pixels[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, k=1)
    return pixels
