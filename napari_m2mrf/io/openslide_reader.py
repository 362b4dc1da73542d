"""Scanner slides through OpenSlide: Aperio SVS, Hamamatsu NDPI/VMS, 3DHISTECH MRXS, Leica SCN,
Philips TIFF, Ventana BIF, Sakura, Trestle, Zeiss.

:func:`detect_vendor` asks ``openslide.OpenSlide.detect_format`` (after
:func:`~napari_m2mrf.io.input_gate.check_path`) and answers only for vendor formats: a generic tiled
TIFF and an OME-TIFF stay with tifffile (:mod:`napari_m2mrf.io.tiff`), which reads them through a zarr
store with their own chunking, and DICOM goes to wsidicom (:mod:`napari_m2mrf.io.dicom_reader`).

:func:`openslide_pyramid` opens the slide, checks every level's declared size, the tile size and the
declared-to-stored ratio against :class:`~napari_m2mrf.io.limits.Limits` (nothing decoded yet), and
gives a :class:`~napari_m2mrf.io.pyramid.Pyramid` whose levels are :class:`OpenSlideLevel` array-likes:
``(C=3, Y, X)`` uint8, chunked like the file's tiles, each read one ``read_region`` call for just the
asked rectangle. The level-0 pixel size is ``openslide.mpp-x`` (µm per pixel; ``mpp-y`` when only that
is given). OpenSlide leaves a slide object in a permanent error state after one failed read (a
corrupt tile), so the levels share a :class:`SlideHandle` that reopens the slide after such a read:
the bad tile's read raises, the others still show.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import InputRefused, UserError, first_line
from napari_m2mrf.io.arrays import RegionArray
from napari_m2mrf.io.handles import closed_on_error
from napari_m2mrf.io.pyramid import Pyramid

logger = logging.getLogger(__name__)

# What OpenSlide's detect_format names for the vendor formats it reads better than tifffile.
VENDORS = ("aperio", "hamamatsu", "leica", "mirax", "philips", "sakura", "trestle", "ventana", "zeiss")
# Extensions whose content is not TIFF but which OpenSlide reads (NDPI, SCN, BIF, SVS are TIFFs).
VENDOR_EXTENSIONS = (".svs", ".svslide", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".czi")
DEFAULT_TILE = 512
_MAX_PLAUSIBLE_PIXEL_UM = 1000.0
_PHILIPS_SPACING = "philips.PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE[0].DICOM_PIXEL_SPACING"


def detect_vendor(path: str | os.PathLike[str]) -> str | None:
    """The OpenSlide vendor of ``path`` (one of :data:`VENDORS`) or None (generic TIFF, DICOM, not a slide).

    ``path`` passes :func:`~napari_m2mrf.io.input_gate.check_path` first (a FIFO or device is never opened).
    """
    from napari_m2mrf.io.input_gate import check_path

    check_path(path, folder_ok=False)
    try:
        import openslide

        vendor = openslide.OpenSlide.detect_format(str(path))
    except (ImportError, OSError, ValueError) as exc:
        logger.debug("%s: OpenSlide cannot tell the format (%s)", path, exc)
        return None
    return vendor if vendor in VENDORS else None


def open_slide(path: Path) -> Any:
    """``openslide.OpenSlide(path)``; ``UserError`` naming the file when OpenSlide refuses it."""
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise UserError(f"{path}: not a slide OpenSlide can read") from None
    except (openslide.OpenSlideError, OSError, ValueError) as exc:
        raise InputRefused(f"{path}: OpenSlide cannot open the slide ({first_line(exc)})") from None


def slide_pixel_size_um(properties: Any) -> float | None:
    """Level-0 µm per pixel from ``openslide.mpp-x`` (or ``mpp-y``); None when absent or implausible.

    A Philips TIFF whose pixel spacing OpenSlide did not turn into ``mpp-x`` falls back to its
    ``DICOM_PIXEL_SPACING`` (mm, "row" "column").
    """
    for key in ("openslide.mpp-x", "openslide.mpp-y"):
        try:
            value = float(properties.get(key, ""))
        except (TypeError, ValueError):
            continue
        if 0 < value <= _MAX_PLAUSIBLE_PIXEL_UM:
            return value
    spacing = properties.get(_PHILIPS_SPACING) or properties.get("philips.DICOM_PIXEL_SPACING")
    if spacing:
        try:
            value = float(str(spacing).replace('"', " ").split()[-1]) * 1000.0
        except (ValueError, IndexError):
            return None
        if 0 < value <= _MAX_PLAUSIBLE_PIXEL_UM:
            return value
    return None


def _tile_size(properties: Any, level: int) -> tuple[int, int]:
    try:
        height = int(properties.get(f"openslide.level[{level}].tile-height", DEFAULT_TILE))
        width = int(properties.get(f"openslide.level[{level}].tile-width", DEFAULT_TILE))
    except (TypeError, ValueError):
        return DEFAULT_TILE, DEFAULT_TILE
    return (height if height > 0 else DEFAULT_TILE), (width if width > 0 else DEFAULT_TILE)


def _stored_bytes(path: Path) -> int:
    """Bytes of the slide on disk: the file, plus a MIRAX/VMS companion folder of the same stem."""
    total = path.stat().st_size
    companion = path.with_suffix("")
    if path.suffix.lower() in (".mrxs", ".vms", ".vmu") and companion.is_dir():
        total += sum(entry.stat().st_size for entry in os.scandir(companion) if entry.is_file(follow_symlinks=False))
    return total


def check_slide(path: Path, slide: Any) -> None:
    """Every level's declared size, its tiles and the declared/stored ratio against the limits (nothing decoded)."""
    from napari_m2mrf.io.input_gate import check_zarr_levels
    from napari_m2mrf.io.limits import current_limits

    limits = current_limits()
    shapes = [(3, int(h), int(w)) for w, h in slide.level_dimensions]
    chunks = [(3, *_tile_size(slide.properties, k)) for k in range(len(shapes))]
    check_zarr_levels(path, shapes, [np.uint8] * len(shapes), chunks, _stored_bytes(path), limits)


def _open_checked(path: Path) -> Any:
    """The OpenSlide slide at ``path`` once it passed :func:`check_slide` (closed when it did not)."""
    slide = open_slide(path)
    with closed_on_error(slide):
        check_slide(path, slide)
    return slide


def inspect_openslide(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(height, width, levels)`` of an OpenSlide slide once it passed :func:`check_slide`."""
    with closing(_open_checked(Path(path))) as slide:
        width, height = slide.dimensions
        return int(height), int(width), int(slide.level_count)


def openslide_pyramid(path: str | os.PathLike[str]) -> Pyramid:
    """The slide at ``path`` as a lazy :class:`Pyramid` of :class:`OpenSlideLevel` (nothing decoded)."""
    path = Path(path)
    with closed_on_error(_open_checked(path)) as slide:
        handle = SlideHandle(path, slide)
        levels = [OpenSlideLevel(handle, k, str(path)) for k in range(slide.level_count)]
        return Pyramid(
            levels=levels,  # type: ignore[arg-type]
            downsamples=[float(d) for d in slide.level_downsamples],
            pixel_size_um=slide_pixel_size_um(slide.properties),
            name=path.stem,
            source=path,
            keep_alive=[handle],
        )


def _background(properties: Any) -> np.ndarray:
    text = str(properties.get("openslide.background-color", "FFFFFF"))
    try:
        return np.array([int(text[i : i + 2], 16) for i in (0, 2, 4)], np.float32)
    except ValueError:
        return np.full(3, 255, np.float32)


class SlideHandle:
    """The OpenSlide object that a slide's levels share, replaced by a freshly opened one after a failed read.

    A read that fails raises as it did; the slide object it failed on stays in OpenSlide's error
    state and is dropped (closed when no reader holds it), so later reads of good tiles succeed.
    """

    def __init__(self, path: Path, slide: Any) -> None:
        self.path = path
        self.slide = slide
        self._lock = threading.Lock()

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
        """``slide.read_region``; on an OpenSlide error the slide is reopened for the next reads, then the error raised."""
        import openslide

        slide = self.slide
        try:
            return slide.read_region(location, level, size)
        except openslide.OpenSlideError:
            with self._lock:
                if self.slide is slide:
                    logger.debug("%s: reopened after a failed read", self.path)
                    self.slide = openslide.OpenSlide(str(self.path))
            raise

    def close(self) -> None:
        self.slide.close()


class OpenSlideLevel(RegionArray):
    """Level ``level`` of an OpenSlide slide as a read-only ``(3, Y, X)`` uint8 array-like.

    A read is one ``read_region`` call for the asked rectangle (OpenSlide decodes only the tiles
    under it); transparent pixels (outside the scanned area) are composited onto the slide's
    background colour. ``chunks`` is the file's tile size.
    """

    def __init__(self, handle: SlideHandle, level: int, where: str) -> None:
        slide = handle.slide
        width, height = slide.level_dimensions[level]
        self._handle = handle
        self._level = level
        self._where = where
        self._downsample = float(slide.level_downsamples[level])
        self._background = _background(slide.properties)
        self.shape = (3, int(height), int(width))
        self.dtype = np.dtype(np.uint8)
        self.chunks = (3, *_tile_size(slide.properties, level))

    def __repr__(self) -> str:
        return f"OpenSlideLevel({self._where} level {self._level}, {self.shape})"

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of this level as ``(Y, X, 3)`` uint8 (one ``read_region``)."""
        location = (int(round(x0 * self._downsample)), int(round(y0 * self._downsample)))
        rgba = np.asarray(self._handle.read_region(location, self._level, (x1 - x0, y1 - y0)))
        if rgba.ndim != 3 or rgba.shape[:2] != (y1 - y0, x1 - x0):
            raise InputRefused(f"{self._where} level {self._level}: OpenSlide returned {rgba.shape} for {(y1 - y0, x1 - x0)}")
        rgb, alpha = rgba[..., :3], rgba[..., 3]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgb)
        weight = alpha[..., None].astype(np.float32) / 255.0
        mixed = rgb.astype(np.float32) * weight + self._background * (1.0 - weight)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
