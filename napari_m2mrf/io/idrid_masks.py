"""IDRiD lesion masks: one 1-bit palette TIFF per image and class, and the dataset's folder names.

The masks of the IDRiD segmentation set are uncompressed little-endian classic TIFFs written by
IrfanView: one page, ``PhotometricInterpretation`` 3 (palette), 1 bit per sample, a two-entry
colour map (index 0 black, index 1 red), strips of about 8 KiB (15 rows for a 4288-pixel row),
pixel data right after the 8-byte header, the IFD after the pixels and the tag values after the
IFD, ``XResolution = YResolution = 0/1`` with ``ResolutionUnit`` inch. ``write_idrid_mask``
writes that same structure, so the files it writes are read by every tool that reads IDRiD.

Layout (``root`` is the folder holding "A. Segmentation"'s two top folders)::

    root/1. Original Images/<split>/<stem>.jpg
    root/2. All Segmentation Groundtruths/<split>/<n>. <Class>/<stem>_<CODE>.tif
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from napari_m2mrf.classes import IDRID_FOLDERS
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.atomic import write_bytes_atomic

IDRID_IMAGES_FOLDER = "1. Original Images"
IDRID_GROUNDTRUTH_FOLDER = "2. All Segmentation Groundtruths"
IDRID_SPLITS = ("a. Training Set", "b. Testing Set")

# TIFF tag codes and field types used by IDRiD's masks.
_SHORT, _LONG, _RATIONAL = 3, 4, 5
_FIELD_SIZE = {_SHORT: 2, _LONG: 4, _RATIONAL: 8}
_PALETTE = 3
_INCH = 2
_STRIP_TARGET_BYTES = 8192
# Palette of the IDRiD masks, 16-bit per channel: background black, lesion red.
_COLORMAP_RGB = ((0, 65535), (0, 0), (0, 0))


def idrid_mask_path(root: str | os.PathLike[str], split: str, image_stem: str, code: str) -> Path:
    """Where IDRiD keeps the ``code`` mask (MA, HE, EX, SE or OD) of image ``image_stem`` in ``split``.

    Example: ``idrid_mask_path(root, "a. Training Set", "IDRiD_01", "MA")`` is
    ``root/2. All Segmentation Groundtruths/a. Training Set/1. Microaneurysms/IDRiD_01_MA.tif``.
    """
    key = code.upper()
    if key not in IDRID_FOLDERS:
        raise UserError(f"unknown IDRiD class code {code!r}; valid: {', '.join(IDRID_FOLDERS)}")
    return Path(root) / IDRID_GROUNDTRUTH_FOLDER / split / IDRID_FOLDERS[key] / f"{image_stem}_{key}.tif"


def idrid_image_path(root: str | os.PathLike[str], split: str, image_stem: str) -> Path:
    """Where IDRiD keeps the colour photograph ``image_stem`` of ``split`` (a JPEG)."""
    return Path(root) / IDRID_IMAGES_FOLDER / split / f"{image_stem}.jpg"


def read_idrid_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDRiD lesion mask as a bool (H, W) array (True = lesion).

    Accepts IDRiD's 1-bit palette TIFFs and other single-channel integer TIFF masks (any non-zero
    value is lesion). Raises ``UserError`` naming the file when it is missing, not a TIFF,
    truncated, or holds something other than a single-channel integer image.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such mask file")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            _check_pixels_present(path, page.dataoffsets, page.databytecounts)
            from napari_m2mrf.io.input_gate import check_pixels
            from napari_m2mrf.io.limits import current_limits

            limits = current_limits()
            check_pixels(path, int(page.imagelength), int(page.imagewidth), limits.max_image_pixels, "max_image_pixels", limits)
            data = page.asarray()
    except UserError:
        raise
    except (tifffile.TiffFileError, struct.error, IndexError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable TIFF mask ({exc})") from None
    if data.ndim != 2:
        raise UserError(f"{path}: expected a single-channel 2-D mask, found an image of shape {data.shape}")
    if data.dtype != np.bool_ and data.dtype.kind not in "ui":
        raise UserError(f"{path}: expected a 1-bit or integer mask, found pixels of type {data.dtype}")
    return data.astype(bool, copy=False) if data.dtype == np.bool_ else data != 0


def _check_pixels_present(path: Path, offsets: tuple[int, ...], bytecounts: tuple[int, ...]) -> None:
    """Raise ``UserError`` when a strip or tile of pixel data lies (partly) past the end of the file."""
    size = path.stat().st_size
    if not offsets:
        raise UserError(f"{path}: the TIFF holds no pixel data")
    for offset, count in zip(offsets, bytecounts):
        if offset + count > size:
            raise UserError(
                f"{path}: truncated: pixel data run to byte {offset + count} but the file has {size} bytes"
            )


def write_idrid_mask(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write ``mask`` (bool (H, W), True = lesion) as an IDRiD 1-bit palette TIFF, atomically.

    Integer masks holding only 0 and 1 are accepted too. The file is written next to ``path`` under
    a temporary name and renamed over it, so a crash never leaves a half-written mask. Raises
    ``UserError`` naming the file for anything that is not a 2-D binary mask or when the folder
    cannot be written.
    """
    path = Path(path)
    binary = _as_binary_mask(path, mask)
    try:
        return write_bytes_atomic(path, encode_idrid_mask(binary))
    except OSError as exc:
        raise UserError(f"{path}: cannot write the mask ({exc.strerror or exc})") from None


def _as_binary_mask(path: Path, mask: np.ndarray) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2 or 0 in array.shape:
        raise UserError(f"{path}: a mask must be a non-empty 2-D array (H, W), got shape {array.shape}")
    if array.shape[0] > 0xFFFFFFFF // 8 or array.shape[1] > 0xFFFFFFFF // 8:
        raise UserError(f"{path}: a mask of shape {array.shape} is too large for a classic TIFF")
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind in "ui" and not np.any((array != 0) & (array != 1)):
        return array.astype(bool)
    raise UserError(f"{path}: a mask must be bool (or integers 0/1), got {array.dtype} values")


def encode_idrid_mask(mask: np.ndarray) -> bytes:
    """The bytes of an IDRiD-structured 1-bit palette TIFF holding bool ``mask`` (H, W)."""
    height, width = mask.shape
    packed = np.packbits(mask, axis=1)  # (H, ceil(W / 8)) uint8, most significant bit first
    row_bytes = packed.shape[1]
    rows_per_strip = max(1, min(height, _STRIP_TARGET_BYTES // row_bytes))
    strip_rows = range(0, height, rows_per_strip)
    strip_counts = [row_bytes * min(rows_per_strip, height - start) for start in strip_rows]
    strip_offsets = [8 + row_bytes * start for start in strip_rows]

    pixels = packed.tobytes()
    ifd_offset = _even(8 + len(pixels))
    n_entries = 15
    values_offset = ifd_offset + 2 + 12 * n_entries + 4
    dimension_type = _SHORT if max(height, width) <= 0xFFFF else _LONG

    # Out-of-line values in IDRiD's order: XResolution, YResolution, StripByteCounts, StripOffsets, ColorMap.
    out_of_line: list[tuple[int, bytes]] = []
    cursor = values_offset

    def value_field(field_type: int, values: list[int]) -> bytes:
        """The 4-byte value-or-offset field of an entry; long values go after the IFD."""
        nonlocal cursor
        code = {_SHORT: "H", _LONG: "I", _RATIONAL: "I"}[field_type]
        payload = struct.pack(f"<{len(values)}{code}", *values)
        if len(payload) <= 4:
            return payload.ljust(4, b"\0")
        out_of_line.append((cursor, payload))
        offset = cursor
        cursor = _even(cursor + len(payload))
        return struct.pack("<I", offset)

    def entry(tag: int, field_type: int, values: list[int]) -> bytes:
        count = len(values) // 2 if field_type == _RATIONAL else len(values)
        return struct.pack("<HHI", tag, field_type, count) + value_field(field_type, values)

    entries = [
        entry(256, dimension_type, [width]),  # ImageWidth
        entry(257, dimension_type, [height]),  # ImageLength
        entry(258, _SHORT, [1]),  # BitsPerSample
        entry(259, _SHORT, [1]),  # Compression: none
        entry(262, _SHORT, [_PALETTE]),  # PhotometricInterpretation
    ]
    # Values are laid out in IDRiD's order, which is not tag order: reserve the resolutions first.
    x_resolution = value_field(_RATIONAL, [0, 1])
    y_resolution = value_field(_RATIONAL, [0, 1])
    strip_counts_field = value_field(_LONG, strip_counts)
    strip_offsets_field = value_field(_LONG, strip_offsets)
    entries += [
        struct.pack("<HHI", 273, _LONG, len(strip_offsets)) + strip_offsets_field,  # StripOffsets
        entry(274, _SHORT, [1]),  # Orientation: top-left
        entry(277, _SHORT, [1]),  # SamplesPerPixel
        entry(278, _SHORT if rows_per_strip <= 0xFFFF else _LONG, [rows_per_strip]),  # RowsPerStrip
        struct.pack("<HHI", 279, _LONG, len(strip_counts)) + strip_counts_field,  # StripByteCounts
        struct.pack("<HHI", 282, _RATIONAL, 1) + x_resolution,  # XResolution
        struct.pack("<HHI", 283, _RATIONAL, 1) + y_resolution,  # YResolution
        entry(284, _SHORT, [1]),  # PlanarConfiguration: contiguous
        entry(296, _SHORT, [_INCH]),  # ResolutionUnit
        entry(320, _SHORT, [v for channel in _COLORMAP_RGB for v in channel]),  # ColorMap
    ]
    assert len(entries) == n_entries

    buffer = bytearray(cursor)
    buffer[0:8] = b"II*\0" + struct.pack("<I", ifd_offset)
    buffer[8 : 8 + len(pixels)] = pixels
    ifd = struct.pack("<H", n_entries) + b"".join(entries) + struct.pack("<I", 0)
    buffer[ifd_offset : ifd_offset + len(ifd)] = ifd
    for offset, payload in out_of_line:
        buffer[offset : offset + len(payload)] = payload
    return bytes(buffer)


def _even(offset: int) -> int:
    """TIFF offsets must be word-aligned."""
    return offset + (offset & 1)
