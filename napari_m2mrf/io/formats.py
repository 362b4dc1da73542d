"""What a path holds, decided from its content (magic bytes, TIFF structure, zarr metadata).

``inspect_source(path)`` answers without decoding pixels: the container format, the level-0
size, the number of pyramid levels, and whether it is a fundus photograph (one small image) or a
slide (a pyramid, or an image too large to hold in memory comfortably).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.dicom_reader import DICOM_EXTENSIONS
from napari_m2mrf.io.openslide_reader import VENDOR_EXTENSIONS

logger = logging.getLogger(__name__)

# Above this many pixels a single image is treated as a slide (DDR's largest photograph is 18 Mpx).
FUNDUS_MAX_PIXELS = 40_000_000

_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
)
# Vendor slide extensions (OpenSlide; the TIFF-based ones are also sniffed from their content) and DICOM.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".btf", ".tf8") + VENDOR_EXTENSIONS + DICOM_EXTENSIONS
ZARR_EXTENSIONS = (".zarr",)


@dataclass(frozen=True)
class SourceInfo:
    """A readable source: ``format`` (jpeg/png/bmp/tiff/zarr/openslide/dicom), level-0 ``(height, width)``, ``levels``."""

    path: Path
    format: str
    height: int
    width: int
    levels: int
    whole_slide: bool = False

    @property
    def kind(self) -> str:
        """``"slide"`` for pyramids, scanner files and very large images, ``"fundus"`` otherwise."""
        if self.format == "zarr" or self.whole_slide or self.levels > 1:
            return "slide"
        if self.height * self.width > FUNDUS_MAX_PIXELS:
            return "slide"
        return "fundus"


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """The container format from the content; None if unknown.

    ``"zarr"`` for a zarr folder, ``"dicom"`` for a DICOM file (``DICM`` at byte 128) or a folder of
    them, ``"openslide"`` for a vendor slide that OpenSlide recognises (Aperio, Hamamatsu, MIRAX,
    Leica, Philips, Ventana, …: asked for a TIFF or a vendor extension only), else from the magic
    bytes: ``"tiff"`` (OME-TIFF, generic tiled TIFF, plain TIFF: read by tifffile), ``"jpeg"``,
    ``"png"``, ``"bmp"``. Raises ``UserError`` naming the file when it cannot be opened or is empty;
    the path passes :func:`~napari_m2mrf.io.input_gate.check_path` before anything is opened.
    """
    from napari_m2mrf.io.input_gate import check_path

    path = Path(path)
    if stat.S_ISDIR(check_path(path).st_mode):  # never opens a FIFO or a device
        if _is_zarr_folder(path):
            return "zarr"
        from napari_m2mrf.io.dicom_reader import is_dicom_folder

        return "dicom" if is_dicom_folder(path) else None
    head = _read_head(path, 132)
    if head[128:132] == b"DICM":
        return "dicom"
    found = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if found == "tiff" or path.suffix.lower() in VENDOR_EXTENSIONS:
        from napari_m2mrf.io.openslide_reader import detect_vendor

        if detect_vendor(path) is not None:
            return "openslide"
    return found


def claims_support(path: str | os.PathLike[str]) -> bool:
    """True if the extension or the content says the file is one this plugin reads."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS + ZARR_EXTENSIONS:
        return True
    try:
        return sniff_format(path) is not None
    except UserError:
        return False


def _is_zarr_folder(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


def _read_head(path: Path, size: int) -> bytes:
    from napari_m2mrf.io.input_gate import read_head

    head = read_head(path, size)
    if not head:
        raise UserError(f"{path}: the file is empty (0 bytes)")
    return head


def inspect_source(path: str | os.PathLike[str]) -> SourceInfo:
    """Format, size and levels of ``path`` without decoding pixels; ``UserError`` if unreadable.

    This is the read-side gate for images (:mod:`napari_m2mrf.io.input_gate`): the path kind, the
    header and the metadata are checked against :func:`~napari_m2mrf.io.limits.current_limits`.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: no such file or folder")
    found = sniff_format(path)
    if found is None:
        what = "folder" if path.is_dir() else "file"
        raise UserError(
            f"{path}: not a supported image ({what} content is not JPEG, PNG, BMP, TIFF, a slide scanner's "
            "format, DICOM or OME-Zarr)"
        )
    if found == "zarr":
        pyramid = gated_ome_zarr(path, check_chunks=False)
        _, height, width = pyramid.shape
        return _found(SourceInfo(path, "zarr", height, width, len(pyramid.levels)))
    if found == "openslide":
        from napari_m2mrf.io.openslide_reader import inspect_openslide

        height, width, levels = inspect_openslide(path)
        return _found(SourceInfo(path, "openslide", height, width, levels, whole_slide=True))
    if found == "dicom":
        from napari_m2mrf.io.dicom_reader import inspect_dicom

        height, width, levels = inspect_dicom(path)
        return _found(SourceInfo(path, "dicom", height, width, levels, whole_slide=True))
    if found == "tiff":
        from napari_m2mrf.io.tiff import inspect_tiff

        height, width, levels, whole_slide = inspect_tiff(path)
        return _found(SourceInfo(path, "tiff", height, width, levels, whole_slide))
    from napari_m2mrf.io.photographs import pillow_size

    width, height = pillow_size(path)
    return _found(SourceInfo(path, found, height, width, 1))


def _found(info: SourceInfo) -> SourceInfo:
    logger.info(
        "%s: %s content, %d×%d px, %d level(s): a %s", info.path, info.format, info.width, info.height, info.levels,
        info.kind,
    )
    return info


def gated_ome_zarr(path: Path, *, check_chunks: bool = True):  # noqa: ANN201 - a Pyramid
    """The OME-Zarr image at ``path`` once the store layout and every level's metadata pass the gate."""
    from napari_m2mrf.io.input_gate import check_zarr_levels, check_zarr_store
    from napari_m2mrf.io.made_on_read import registered
    from napari_m2mrf.io.omezarr import open_ome_zarr

    stored = check_zarr_store(path)
    if registered(path) is not None:  # chunks made on read (the sample slide): no compression ratio to judge
        stored = None
    pyramid = open_ome_zarr(path, check_chunks=check_chunks)
    check_zarr_levels(
        path,
        [level.shape for level in pyramid.levels],
        [level.dtype for level in pyramid.levels],
        [getattr(level, "chunks", level.shape) for level in pyramid.levels],
        stored,
    )
    return pyramid
