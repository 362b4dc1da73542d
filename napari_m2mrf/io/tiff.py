"""TIFF sources (OME-TIFF, Aperio SVS, Hamamatsu NDPI, generic tiled pyramids, plain TIFF).

Slides are read lazily through tifffile's zarr store (one zarr array per pyramid level); before
that the file's structure is checked so that a truncated or inconsistent file gives a clear
``UserError`` instead of a decoder crash, a hang or a terabyte allocation.
"""

from __future__ import annotations

import os
import re
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import UserError, first_line
from napari_m2mrf.io.arrays import AxesView
from napari_m2mrf.io.handles import closed_on_error
from napari_m2mrf.io.pyramid import LabelPyramid, Pyramid

# A strip or tile bigger than this (decoded) cannot be read piecewise with bounded memory.
MAX_CHUNK_BYTES = 1 << 30
# Resolution tags above this many µm per pixel are screen defaults (72 dpi), not a microscope's.
_MAX_PLAUSIBLE_PIXEL_UM = 20.0
_UM_PER_UNIT = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: inch, centimetre
_OME_UNIT_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}
LABELS_SERIES_NAME = "ground_truth"
# tifffile's flags for files written by slide scanners.
_SCANNER_FLAGS = ("svs", "ndpi", "scn", "philips", "bif", "qpi")


def open_tiff(path: str | os.PathLike[str]) -> Any:
    """``tifffile.TiffFile`` for ``path``; ``UserError`` naming the file if it is not a readable TIFF."""
    import tifffile

    path = Path(path)
    try:
        tif = tifffile.TiffFile(path)
    except PermissionError:
        raise UserError(f"{path}: permission denied (cannot read the file)") from None
    except (tifffile.TiffFileError, struct.error, ValueError, IndexError, KeyError, OSError) as exc:
        raise UserError(f"{path}: not a readable TIFF ({first_line(exc)})") from None
    try:
        _check_directory_chain(path, tif)
        series = tif.series  # parsed here: a vendor layout naming a directory the file lacks fails now
    except UserError:
        tif.close()
        raise
    except (tifffile.TiffFileError, struct.error, ValueError, IndexError, KeyError, OSError) as exc:
        tif.close()
        raise UserError(f"{path}: not a readable TIFF ({first_line(exc)})") from None
    if not series:
        tif.close()
        raise UserError(f"{path}: the TIFF holds no image")
    return tif


def _check_directory_chain(path: Path, tif: Any) -> None:
    """``UserError`` when the last image directory links to a next one past the end of the file (a cut-off file).

    tifffile stops at such a link with a logged warning and shows the directories before it, so a
    truncated pyramid would otherwise open with its first levels only.
    """
    where = tif.pages.next_page_offset  # the file position of the last directory's link to the next
    size = int(tif.filehandle.size)
    if where is None:
        return
    width = int(tif.tiff.offsetsize)
    if where + width > size:
        raise UserError(f"{path}: truncated: the file ends at byte {size}, inside an image directory")
    tif.filehandle.seek(where)
    link = int.from_bytes(tif.filehandle.read(width), "little" if tif.byteorder == "<" else "big")
    if link >= size:
        raise UserError(f"{path}: truncated: its last image directory links to a next one past the end of the file ({size} bytes)")


def image_series_index(tif: Any) -> int:
    """Index of the image series: the first one that is not our ground-truth labels series."""
    for index, series in enumerate(tif.series):
        if series.name != LABELS_SERIES_NAME:
            return index
    return 0


def check_series(path: Path, series: Any) -> None:
    """Raise ``UserError`` when the pixel data of any level of ``series`` cannot be read safely.

    Checks that every strip/tile lies inside the file, that uncompressed pieces have the size the
    header promises, that no piece is too large to decode alone, and that the image is 2-D.
    """
    from napari_m2mrf.io.input_gate import check_tiff_level
    from napari_m2mrf.io.limits import current_limits

    limits = current_limits()
    file_size = path.stat().st_size
    if len(series.levels) > limits.max_levels:
        raise UserError(f"{path}: {len(series.levels)} pyramid levels, over {limits.max_levels}; {limits.how_to_raise('max_levels')}")
    for level_index, level in enumerate(series.levels):
        page = level.keyframe
        # pieces may share bytes (a bomb points every tile at one piece): never count more than the file
        stored = min(file_size, sum(int(sum(p.databytecounts)) for p in level.pages if p is not None))
        check_tiff_level(path, level_index, page, stored, limits)
        extra = {a: n for a, n in zip(level.axes, level.shape, strict=True) if a not in "YXSC" and n > 1}
        if extra:
            raise UserError(f"{path}: holds a stack ({level.axes} {level.shape}); only 2-D images are supported")
        if min(page.imagelength, page.imagewidth) < 1:
            raise UserError(f"{path}: level {level_index} has no pixels ({page.imagewidth}×{page.imagelength})")
        chunk_bytes = _decoded_chunk_bytes(page)
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise UserError(
                f"{path}: level {level_index} ({page.imagewidth}×{page.imagelength} pixels) is stored in pieces "
                f"of {chunk_bytes / 2**30:.1f} GiB that cannot be read in parts; save it as a tiled TIFF"
            )
        for page_in_level in level.pages:
            if page_in_level is None:
                continue
            _check_pieces(path, page_in_level, file_size, chunk_bytes, level_index)


def _decoded_chunk_bytes(page: Any) -> int:
    if page.is_tiled:
        rows, cols = page.tilelength, page.tilewidth
    else:
        rows, cols = min(page.rowsperstrip or page.imagelength, page.imagelength), page.imagewidth
    return int(rows) * int(cols) * int(page.samplesperpixel) * max(1, int(page.bitspersample) // 8)


def _check_pieces(path: Path, page: Any, file_size: int, chunk_bytes: int, level_index: int) -> None:
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if offsets.size == 0 or not np.any(counts):
        raise UserError(f"{path}: level {level_index} has no pixel data")
    if offsets.size != counts.size:
        raise UserError(
            f"{path}: truncated or corrupt: level {level_index} lists {offsets.size} data offsets "
            f"but {counts.size} byte counts"
        )
    present = counts > 0
    ends = offsets[present] + counts[present]
    if ends.size and int(ends.max()) > file_size:
        raise UserError(
            f"{path}: truncated: level {level_index} pixel data runs to byte {int(ends.max())} "
            f"but the file has {file_size} bytes"
        )
    expected = _expected_pieces(page)
    if offsets.size < expected:
        raise UserError(
            f"{path}: level {level_index} header claims {page.imagewidth}×{page.imagelength} pixels in "
            f"{expected} strips/tiles but lists {offsets.size} (corrupt or truncated header)"
        )
    needed = int(page.imagelength) * int(page.imagewidth) * int(page.samplesperpixel) * int(page.bitspersample) // 8
    if page.compression == 1 and int(counts.sum()) < needed:
        raise UserError(
            f"{path}: level {level_index} is uncompressed but holds {int(counts.sum())} bytes of pixel data, "
            f"fewer than its {page.imagewidth}×{page.imagelength} pixels need ({needed} bytes)"
        )


def _expected_pieces(page: Any) -> int:
    planes = page.samplesperpixel if page.planarconfig == 2 else 1
    if page.is_tiled:
        across = -(-page.imagewidth // page.tilewidth)
        down = -(-page.imagelength // page.tilelength)
        return across * down * planes
    rows = page.rowsperstrip or page.imagelength
    return -(-page.imagelength // min(rows, page.imagelength)) * planes


def inspect_tiff(path: str | os.PathLike[str]) -> tuple[int, int, int, bool]:
    """``(height, width, levels, whole_slide)`` of the image series of a TIFF, after :func:`check_series`.

    ``whole_slide`` is True for files a slide scanner wrote (Aperio, Hamamatsu, Leica, Philips, …).
    """
    path = Path(path)
    with open_tiff(path) as tif:
        series = tif.series[image_series_index(tif)]
        check_series(path, series)
        page = series.levels[0].keyframe
        whole_slide = any(getattr(tif, f"is_{flag}", False) for flag in _SCANNER_FLAGS)
        return int(page.imagelength), int(page.imagewidth), len(series.levels), whole_slide


def pixel_size_um(tif: Any, series_index: int = 0) -> float | None:
    """Level-0 pixel size in µm from OME-XML, Aperio's ``MPP`` or the resolution tags; None if unknown."""
    if tif.is_ome and tif.ome_metadata:
        size = _ome_pixel_size(tif.ome_metadata, series_index)
        if size is not None:
            return size
    page = tif.series[series_index].levels[0].keyframe
    description = page.description or ""
    if tif.is_svs:
        match = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", description)
        if match:
            return float(match.group(1))
    tags = page.tags
    resolution, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if resolution is None or unit is None or int(unit.value) not in _UM_PER_UNIT:
        return None
    numerator, denominator = resolution.value
    if not numerator or not denominator:
        return None
    size = _UM_PER_UNIT[int(unit.value)] * denominator / numerator
    return size if 0 < size <= _MAX_PLAUSIBLE_PIXEL_UM else None


def _ome_pixel_size(xml: str, series_index: int) -> float | None:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    pixels = [element for element in root.iter() if element.tag.endswith("}Pixels") or element.tag == "Pixels"]
    if series_index >= len(pixels) or "PhysicalSizeX" not in pixels[series_index].attrib:
        return None
    element = pixels[series_index]
    factor = _OME_UNIT_UM.get(element.attrib.get("PhysicalSizeXUnit", "µm"))
    return float(element.attrib["PhysicalSizeX"]) * factor if factor else None


def tiff_pyramid(path: str | os.PathLike[str]) -> Pyramid:
    """The image series of a TIFF as a lazy :class:`Pyramid` (levels ``(C, Y, X)``, nothing decoded)."""
    path = Path(path)
    with closed_on_error(open_tiff(path)) as tif:
        index = image_series_index(tif)
        series = tif.series[index]
        check_series(path, series)
        from napari_m2mrf.io.input_gate import check_lazy_dtype

        check_lazy_dtype(path, series.dtype)  # lazily read: uint8/uint16 (photographs go through read_image)
        levels, store = _zarr_levels(tif, index)
        views = [AxesView(array, level.axes, "CYX") for array, level in zip(levels, series.levels, strict=True)]
        for view, level in zip(views, series.levels, strict=True):
            view.read_tile = TiffTiles.for_level(tif, level)  # type: ignore[attr-defined]
        height = views[0].shape[1]
        return Pyramid(
            levels=views,
            downsamples=[height / view.shape[1] for view in views],
            pixel_size_um=pixel_size_um(tif, index),
            name=_stem(path),
            source=path,
            keep_alive=[tif, store],
        )


class TiffTiles:
    """Tile ``(row, col)`` of a one-page tiled TIFF level as ``(C, tile_y, tile_x)`` (cropped at the edges).

    Reads the tile's bytes under tifffile's file lock and decodes them with ``TiffPage.decode``, with
    none of the zarr store's per-chunk overhead (about 7× faster per tile): what the on-demand
    overview levels (:mod:`napari_m2mrf.io.lazy_overview`) use when they read scattered tiles.
    """

    def __init__(self, tif: Any, page: Any) -> None:
        self._handle = tif.filehandle
        self._page = page
        self._across = -(-int(page.imagewidth) // int(page.tilewidth))
        self.shape = (int(page.imagelength), int(page.imagewidth))
        self.tile = (int(page.tilelength), int(page.tilewidth))

    @classmethod
    def for_level(cls, tif: Any, level: Any) -> TiffTiles | None:
        """A reader for ``level`` when it is one tiled, interleaved page; None otherwise."""
        pages = [page for page in level.pages if page is not None]
        if len(pages) != 1:
            return None
        page = pages[0]
        if not getattr(page, "is_tiled", False) or int(page.planarconfig) != 1 or int(getattr(page, "tiledepth", 1)) != 1:
            return None
        return cls(tif, page)

    def __call__(self, row: int, col: int) -> np.ndarray:
        index = row * self._across + col
        offset, count = int(self._page.dataoffsets[index]), int(self._page.databytecounts[index])
        with self._handle.lock:
            self._handle.seek(offset)
            data = self._handle.read(count)
        segment = self._page.decode(data, index)[0]
        if segment is None:  # an empty tile (no bytes stored): tifffile's fill value
            segment = np.zeros((1, *self.tile, int(self._page.samplesperpixel)), self._page.dtype)
        tile = np.asarray(segment).reshape(*self.tile, -1).transpose(2, 0, 1)
        height = min(self.tile[0], self.shape[0] - row * self.tile[0])
        width = min(self.tile[1], self.shape[1] - col * self.tile[1])
        return tile[:, :height, :width]


def tiff_label_pyramid(
    path: str | os.PathLike[str], colors: dict[int, tuple[float, ...]] | None = None, names: dict[int, str] | None = None
) -> LabelPyramid | None:
    """The ``ground_truth`` series of a TIFF (written by the slide sample) as labels; None if absent."""
    path = Path(path)
    with closed_on_error(open_tiff(path)) as tif:
        for index, series in enumerate(tif.series):
            if series.name != LABELS_SERIES_NAME:
                continue
            check_series(path, series)
            levels, store = _zarr_levels(tif, index)
            views = [AxesView(a, level.axes, "YX") for a, level in zip(levels, series.levels, strict=True)]
            return LabelPyramid(
                levels=views,
                downsamples=[views[0].shape[0] / view.shape[0] for view in views],
                colors=dict(colors or {}),
                names=dict(names or {}),
                name=LABELS_SERIES_NAME,
                keep_alive=[tif, store],
            )
    tif.close()
    return None


def _zarr_levels(tif: Any, series_index: int) -> tuple[list[Any], Any]:
    import zarr

    store = tif.series[series_index].aszarr()
    node = zarr.open(store, mode="r")
    if isinstance(node, zarr.Array):
        return [node], store
    return [node[str(k)] for k in range(len(tif.series[series_index].levels))], store


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_tiff_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Level 0 of a small TIFF as ``(Y, X)`` or ``(Y, X, C)`` and its EXIF/TIFF orientation code (1..8)."""
    import tifffile

    path = Path(path)
    with open_tiff(path) as tif:
        index = image_series_index(tif)
        series = tif.series[index]
        check_series(path, series)
        level = series.levels[0]
        try:
            data = level.asarray()
        except (tifffile.TiffFileError, ValueError, RuntimeError, OSError, struct.error) as exc:
            raise UserError(f"{path}: the pixel data cannot be decoded ({first_line(exc)})") from None
        orientation = level.keyframe.tags.get("Orientation")
        axes = level.axes.replace("S", "C")
        view = AxesView(data, axes, "YXC" if "C" in axes else "YX")
        return view[...], int(orientation.value) if orientation is not None else 1
