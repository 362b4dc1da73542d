"""Opening any supported source as a lazy image pyramid, building one where the file has none.

``open_pyramid`` reads what the file holds (TIFF levels through tifffile's zarr store, OME-Zarr
levels directly). ``ensure_pyramid`` additionally builds a pyramid into the source's workspace
for a large single-resolution image, in blocks, resumably, with progress.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.formats import FUNDUS_MAX_PIXELS, SourceInfo, inspect_source, sniff_format
from napari_m2mrf.io.pyramid import LabelPyramid, Pyramid
from napari_m2mrf.jobs import CancelToken, ProgressCallback

# Flat (non-tiled) formats must be decoded whole; refuse beyond this many pixels (3 GB of RGB).
MAX_FLAT_PIXELS = 1 << 30


def open_pyramid(path: str | os.PathLike[str], info: SourceInfo | None = None) -> Pyramid:
    """The image at ``path`` as a lazy :class:`Pyramid`: TIFF/SVS/NDPI/OME-TIFF, OME-Zarr or a workspace.

    ``info``: the result of :func:`inspect_source` when the caller has it already.
    """
    path = Path(path)
    info = info or inspect_source(path)
    if info.format == "zarr":
        from napari_m2mrf.io.workspace import Workspace

        if Workspace.is_workspace(path):
            return Workspace.open(path, mode="r").image
        from napari_m2mrf.io.omezarr import open_ome_zarr

        return open_ome_zarr(path)
    if info.format == "tiff":
        from napari_m2mrf.io.tiff import tiff_pyramid

        return tiff_pyramid(path)
    from napari_m2mrf.io.fundus import read_image

    image = read_image(path, max_pixels=MAX_FLAT_PIXELS)
    return in_memory_pyramid(image.data, path)


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
    from napari_m2mrf.io.workspace import Workspace

    workspace = Workspace.for_source(path, workspace_path)
    if workspace.has_image:
        return workspace.image
    source = open_pyramid(path, info)
    return workspace.write_image(
        source.levels[0], pixel_size_um=source.pixel_size_um, name=source.name, progress=progress, cancel=cancel
    )


def open_label_pyramids(path: str | os.PathLike[str]) -> list[LabelPyramid]:
    """Label pyramids stored with a slide: OME-Zarr ``labels/*`` or an OME-TIFF ``ground_truth`` series."""
    path = Path(path)
    found = sniff_format(path)
    if found == "zarr":
        from napari_m2mrf.io.omezarr import label_names, open_ome_zarr_labels

        return [open_ome_zarr_labels(path, name) for name in label_names(path)]
    if found == "tiff":
        from napari_m2mrf.io.tiff import tiff_label_pyramid

        found = tiff_label_pyramid(path)
        return [found] if found is not None else []
    return []


def check_pyramid_readable(pyramid: Pyramid) -> None:
    """Decode one chunk of the coarsest level; ``UserError`` naming the file if its data are broken."""
    level = pyramid.levels[-1]
    chunks = getattr(level, "chunks", level.shape)
    try:
        np.asarray(level[..., : max(1, chunks[-2]), : max(1, chunks[-1])])
    except UserError:
        raise
    except Exception as exc:  # decoders raise many types; all mean the same to the user
        text = str(exc).strip().splitlines()
        raise UserError(
            f"{pyramid.source}: pixel data cannot be decoded ({text[0] if text else type(exc).__name__})"
        ) from None
