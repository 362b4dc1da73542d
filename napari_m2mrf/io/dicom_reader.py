"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage) through wsidicom.

A DICOM slide is a folder of ``.dcm`` files (one instance per pyramid level, plus label and overview
instances), one such file, or a list of them. :func:`is_dicom_file` looks for the preamble's ``DICM``
at byte 128; :func:`dicom_files` lists a folder's DICOM files (each through
:func:`~napari_m2mrf.io.input_gate.check_path`, links out of the folder and special files refused).
:func:`dicom_pyramid` opens them with ``wsidicom.WsiDicom.open`` (headers only), checks every level's
declared size, tile size and declared-to-stored ratio against the limits before a frame is decoded,
and gives a :class:`~napari_m2mrf.io.pyramid.Pyramid` of :class:`DicomLevel` array-likes (one
``read_region`` per read, wsidicom decoding only the frames under it). The level-0 pixel size is the
shared functional group's ``PixelSpacing`` (mm, given as µm here).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import InputRefused, UserError, first_line
from napari_m2mrf.io.arrays import RegionArray
from napari_m2mrf.io.handles import closed_on_error
from napari_m2mrf.io.pyramid import Pyramid

logger = logging.getLogger(__name__)

DICOM_EXTENSIONS = (".dcm", ".dicom")
_PREAMBLE = 128
# A folder is a DICOM slide when one of its first entries is a DICOM file.
_FOLDER_PROBE = 64


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file with ``DICM`` at byte 128 (checked with ``check_path`` first)."""
    from napari_m2mrf.io.input_gate import read_head

    try:
        head = read_head(path, _PREAMBLE + 4)
    except UserError:
        return False
    return head[_PREAMBLE : _PREAMBLE + 4] == b"DICM"


def is_dicom_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding DICOM files (a ``.dcm`` name or the ``DICM`` preamble among its first entries)."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)[: _FOLDER_PROBE * 4]
    except OSError:
        return False
    probed = 0
    for entry in entries:
        if not entry.is_file(follow_symlinks=False):
            continue
        if entry.name.lower().endswith(DICOM_EXTENSIONS):
            return True
        if probed < _FOLDER_PROBE:
            probed += 1
            if is_dicom_file(entry.path):
                return True
    return False


def dicom_files(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The DICOM files of a folder, a file or a list of files, each checked by ``check_path``."""
    from napari_m2mrf.io.input_gate import check_path

    if isinstance(path, (str, os.PathLike)) and Path(path).is_dir():
        folder = Path(path)
        check_path(folder)
        found = []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_symlink():
                raise InputRefused(f"{entry.path}: a symbolic link inside the DICOM folder {folder}; refused")
            if entry.is_file(follow_symlinks=False) and is_dicom_file(entry.path):
                found.append(Path(entry.path))
        if not found:
            raise UserError(f"{folder}: no DICOM files in the folder")
        return found
    paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
    for one in paths:
        check_path(one, folder_ok=False)
        if not is_dicom_file(one):
            raise UserError(f"{one}: not a DICOM file (no 'DICM' at byte 128)")
    return paths


def open_wsi(files: list[Path], where: Path) -> Any:
    """``wsidicom.WsiDicom.open(files)``; ``UserError`` naming ``where`` when it is not a readable DICOM WSI."""
    from wsidicom import WsiDicom

    try:
        return WsiDicom.open(files if len(files) > 1 else files[0])
    except Exception as exc:  # noqa: BLE001 - wsidicom and pydicom raise many kinds for a bad file
        raise InputRefused(f"{where}: not a readable DICOM whole-slide image ({first_line(exc)})") from None


def _levels(slide: Any) -> list[Any]:
    levels = list(slide.levels)
    if not levels:
        raise InputRefused(f"{slide}: the DICOM slide has no pyramid levels")
    return sorted(levels, key=lambda level: -level.size.width)


def check_slide(where: Path, files: list[Path], slide: Any) -> None:
    """Declared level sizes, tile sizes and the declared/stored ratio against the limits (nothing decoded)."""
    from napari_m2mrf.io.input_gate import check_zarr_levels
    from napari_m2mrf.io.limits import current_limits

    levels = _levels(slide)
    shapes = [(3, int(level.size.height), int(level.size.width)) for level in levels]
    chunks = [(3, int(level.tile_size.height), int(level.tile_size.width)) for level in levels]
    stored = sum(file.stat().st_size for file in files)
    check_zarr_levels(where, shapes, [np.uint8] * len(shapes), chunks, stored, current_limits())


def pixel_size_um(slide: Any) -> float | None:
    """Level-0 µm per pixel from ``PixelSpacing`` (mm); None when the file does not say."""
    try:
        spacing = _levels(slide)[0].pixel_spacing
    except Exception:  # noqa: BLE001 - a missing PixelMeasuresSequence
        return None
    if spacing is None:
        return None
    value = float(spacing.width) * 1000.0
    return value if value > 0 else None


def _open_checked(path: Path) -> Any:
    """The wsidicom slide at ``path`` once it passed :func:`check_slide` (closed when it did not)."""
    files = dicom_files(path)
    slide = open_wsi(files, path)
    with closed_on_error(slide):
        check_slide(path, files, slide)
    return slide


def inspect_dicom(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(height, width, levels)`` of a DICOM slide once it passed :func:`check_slide`."""
    with closing(_open_checked(Path(path))) as slide:
        levels = _levels(slide)
        return int(levels[0].size.height), int(levels[0].size.width), len(levels)


def dicom_pyramid(path: str | os.PathLike[str]) -> Pyramid:
    """The DICOM slide at ``path`` (a folder or a file) as a lazy :class:`Pyramid` of :class:`DicomLevel`."""
    path = Path(path)
    with closed_on_error(_open_checked(path)) as slide:
        levels = _levels(slide)
        arrays = [DicomLevel(slide, level, str(path)) for level in levels]
        width0 = levels[0].size.width
        return Pyramid(
            levels=arrays,  # type: ignore[arg-type]
            downsamples=[width0 / level.size.width for level in levels],
            pixel_size_um=pixel_size_um(slide),
            name=path.stem,
            source=path,
            keep_alive=[slide],
        )


class DicomLevel(RegionArray):
    """One pyramid level of a DICOM slide as a read-only ``(3, Y, X)`` uint8 array-like (frames as chunks)."""

    def __init__(self, slide: Any, level: Any, where: str) -> None:
        self._slide = slide
        self._level_number = int(level.level)
        self._where = where
        self.shape = (3, int(level.size.height), int(level.size.width))
        self.dtype = np.dtype(np.uint8)
        self.chunks = (3, int(level.tile_size.height), int(level.tile_size.width))

    def __repr__(self) -> str:
        return f"DicomLevel({self._where} level {self._level_number}, {self.shape})"

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of this level as ``(Y, X, 3)`` uint8 (one ``read_region``)."""
        image = self._slide.read_region((x0, y0), self._level_number, (x1 - x0, y1 - y0))
        if getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        data = np.asarray(image)
        if data.shape != (y1 - y0, x1 - x0, 3):
            raise InputRefused(f"{self._where} level {self._level_number}: wsidicom returned {data.shape}")
        return data
