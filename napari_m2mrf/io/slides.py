"""Opening any supported source as a lazy image pyramid, building one where the file has none.

``open_pyramid`` reads what the file holds (TIFF levels through tifffile's zarr store, OME-Zarr
levels directly). ``ensure_pyramid`` additionally builds a pyramid into the source's workspace
for a large single-resolution image, in blocks, resumably, with progress.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.formats import FUNDUS_MAX_PIXELS, SourceInfo, inspect_source, sniff_format
from napari_m2mrf.io.pyramid import LabelPyramid, Pyramid
from napari_m2mrf.jobs import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)

# Flat (non-tiled) formats must be decoded whole; refused beyond ``Limits.max_image_pixels``
# (``NAPARI_M2MRF_MAX_IMAGE_PIXELS``); this is the default, kept for importers.
MAX_FLAT_PIXELS = 1 << 28


def open_pyramid(path: str | os.PathLike[str], info: SourceInfo | None = None) -> Pyramid:
    """The image at ``path`` as a lazy :class:`Pyramid`: a scanner's slide (OpenSlide: SVS, NDPI, MRXS,
    SCN, BIF, Philips TIFF…), DICOM WSI (wsidicom), OME-TIFF or generic TIFF (tifffile), OME-Zarr or a
    workspace.

    ``info``: the result of :func:`inspect_source` when the caller has it already.
    """
    path = Path(path)
    info = info or inspect_source(path)
    from napari_m2mrf.errors import InputRefused
    from napari_m2mrf.io.photographs import read_image
    from napari_m2mrf.io.input_gate import check_zarr_levels
    from napari_m2mrf.io.limits import current_limits

    if info.format == "zarr":  # the store layout was checked by inspect_source; now the levels' metadata
        from napari_m2mrf.io.made_on_read import registered
        from napari_m2mrf.io.workspace import Workspace

        made = registered(path)
        if made is not None:  # a store whose chunks are made on first read (the sample slide)
            return _opened(path, made.pyramid, "OME-Zarr made on read")

        workspace = Workspace.is_workspace(path)
        if workspace:
            pyramid = Workspace.open(path, mode="r").image
        else:
            from napari_m2mrf.io.omezarr import open_ome_zarr

            pyramid = open_ome_zarr(path)
        levels = pyramid.levels
        check_zarr_levels(
            path, [a.shape for a in levels], [a.dtype for a in levels], [getattr(a, "chunks", a.shape) for a in levels], None
        )
        return _opened(path, pyramid, "workspace" if workspace else "OME-Zarr")
    if info.format == "openslide":
        from napari_m2mrf.io.openslide_reader import openslide_pyramid

        return _opened(path, openslide_pyramid(path), "OpenSlide levels")
    if info.format == "dicom":
        from napari_m2mrf.io.dicom_reader import dicom_pyramid

        return _opened(path, dicom_pyramid(path), "DICOM (wsidicom) levels")
    if info.format == "tiff":
        from napari_m2mrf.io.tiff import tiff_pyramid

        try:
            return _opened(path, tiff_pyramid(path), "TIFF levels")
        except InputRefused:
            if info.kind != "fundus":
                raise
        # a photograph of another pixel type (1-bit, float): decoded whole by the photograph rules
    image = read_image(path, max_pixels=current_limits().max_image_pixels)
    return _opened(path, in_memory_pyramid(image.data, path), "decoded whole into memory")


def _opened(path: Path, pyramid: Pyramid, how: str) -> Pyramid:
    logger.info(
        "%s: opened as %s, %d level(s), downsamples %s", path, how, len(pyramid.levels),
        ", ".join(f"{d:g}" for d in pyramid.downsamples),
    )
    return pyramid


def in_memory_pyramid(data: np.ndarray, path: Path, pixel_size_um: float | None = None) -> Pyramid:
    """A one-level :class:`Pyramid` over an in-memory ``(Y, X, C)`` image (no copy)."""
    return Pyramid(
        levels=[np.moveaxis(data, -1, 0)],
        downsamples=[1.0],
        pixel_size_um=pixel_size_um,
        name=path.stem,
        source=path,
    )


def needs_built_pyramid(info: SourceInfo) -> bool:
    """True for a single-resolution source too large to show without a pyramid."""
    return info.format != "zarr" and info.levels == 1 and info.height * info.width > FUNDUS_MAX_PIXELS


def ensure_pyramid(
    path: str | os.PathLike[str],
    *,
    info: SourceInfo | None = None,
    workspace_path: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Pyramid:
    """:func:`open_pyramid`, but a large single-resolution source gets a pyramid built into its workspace.

    The build reads the source block by block (a flat JPEG/PNG is decoded once, whole), shows
    ``progress(done, total, message)`` in blocks, stops with ``Cancelled`` once ``cancel`` is set and
    resumes on the next call.
    """
    path = Path(path)
    info = info or inspect_source(path)
    if not needs_built_pyramid(info):
        return open_pyramid(path, info)
    from napari_m2mrf.io.workspace import Workspace, workspace_path_for

    target = Path(workspace_path) if workspace_path is not None else workspace_path_for(path)
    if Workspace.is_workspace(target):
        existing = Workspace.open(target)
        if existing.has_image:
            logger.info("%s: one level only; using the pyramid already built in %s", path, target)
            return existing.image
    logger.info("%s: one level only; building a pyramid in %s", path, target)
    source = open_pyramid(path, info)
    check_pyramid_readable(source)  # nothing is written next to the input before it passed the gate
    workspace = Workspace.for_source(path, workspace_path)
    return workspace.write_image(
        source.levels[0], pixel_size_um=source.pixel_size_um, name=source.name, progress=progress, cancel=cancel
    )


def open_for_viewing(
    path: str | os.PathLike[str], *, info: SourceInfo | None = None, progress: ProgressCallback | None = None
) -> Pyramid:
    """What the napari reader shows: :func:`open_pyramid`, with coarser levels made on demand where needed.

    A source whose coarsest level is large (over ``FUNDUS_MAX_PIXELS``) but readable in parts (a single-level tiled TIFF of any
    size, a scanner file with too few levels) gets :func:`~napari_m2mrf.io.lazy_overview.with_overview_levels`:
    nothing is built or written, so it shows at once. A pyramid built earlier into the source's
    workspace is used when there is one. A flat JPEG/PNG/BMP (decoded whole anyway) and a TIFF that
    cannot be read in parts get their pyramid built as :func:`ensure_pyramid` does.
    """
    from napari_m2mrf.io.lazy_overview import needs_overview, with_overview_levels

    path = Path(path)
    info = info or inspect_source(path)
    if needs_built_pyramid(info):
        from napari_m2mrf.io.workspace import Workspace, workspace_path_for

        target = workspace_path_for(path)
        if Workspace.is_workspace(target) and Workspace.open(target).has_image:
            return ensure_pyramid(path, info=info, progress=progress)
        if info.format in ("jpeg", "png", "bmp"):
            return ensure_pyramid(path, info=info, progress=progress)
        source = open_pyramid(path, info)
        if not needs_overview(source):
            return ensure_pyramid(path, info=info, progress=progress)
        logger.info("%s: one level only; coarser levels are computed on demand (nothing built)", path)
        return with_overview_levels(source)
    pyramid = open_pyramid(path, info)
    coarsest = pyramid.levels[-1].shape
    if coarsest[-2] * coarsest[-1] > FUNDUS_MAX_PIXELS:  # a scanner file whose smallest level is still huge
        return with_overview_levels(pyramid)
    return pyramid


def open_label_pyramids(path: str | os.PathLike[str]) -> list[LabelPyramid]:
    """Label pyramids stored with a slide: OME-Zarr ``labels/*`` or an OME-TIFF ``ground_truth`` series."""
    from napari_m2mrf.io.made_on_read import registered

    path = Path(path)
    made = registered(path)
    if made is not None:
        return list(made.labels)
    found = sniff_format(path)
    if found == "zarr":
        from napari_m2mrf.io.omezarr import label_names, open_ome_zarr_labels

        return [open_ome_zarr_labels(path, name) for name in label_names(path)]
    if found == "tiff":
        from napari_m2mrf.io.tiff import tiff_label_pyramid

        found = tiff_label_pyramid(path)
        return [found] if found is not None else []
    return []


def check_pyramid_readable(pyramid: Pyramid, *, coarsest_only: bool = False) -> None:
    """Decode every chunk of a small pyramid, the corner chunks of each level of a large one.

    ``coarsest_only``: check the coarsest level alone (the napari reader, which reads level 0 lazily).

    ``CorruptData`` (a ``UserError``) naming the file, the level and the chunk that fails to decode
    (see :func:`~napari_m2mrf.io.input_gate.verify_decodes`).
    """
    from napari_m2mrf.io.input_gate import verify_decodes

    levels = pyramid.levels
    first = len(levels) - 1 if coarsest_only else 0
    verify_decodes(levels[first:], str(pyramid.source), first_level=first)
