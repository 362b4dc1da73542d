"""Sampling-density map files: read (``predict --density``, the Steer sampling widget) and write (its export).

A density map may come as

* a NumPy ``.npy`` array ``(Y, X)`` of any numeric type and size: its header is read and checked first
  (pixel type, 2-D, size within ``NAPARI_M2MRF_MAX_IMAGE_PIXELS``, file long enough), then the array is
  memory-mapped with ``allow_pickle=False`` — loading never runs code and a huge map is never read whole;
* an image (PNG, JPEG, TIFF, BMP) through the photograph reader's gate: brightness is density
  (the mean of its channels, 0–255);
* a workspace (``*.m2mrf.zarr``): its ``sampling/deformation`` (the map of its last run, edited or not).

The values are only checked when they are resampled to the model's grid
(:func:`napari_m2mrf.sampling.density.resample_density`: NaN, negative, all-zero maps are refused there,
band by band). :func:`write_density_map` stores a map as ``.npy`` (write aside, then rename).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import InputRefused, UserError
from napari_m2mrf.sampling.density import check_density_shape

logger = logging.getLogger(__name__)

NPY_MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 1 << 16  # bytes of a .npy header (numpy itself allows 64 KiB)


@dataclass
class DensityFile:
    """A density map read from ``path``: ``values`` ``(Y, X)`` (possibly memory-mapped) and its provenance."""

    path: Path
    values: Any
    provenance: dict[str, Any] = field(default_factory=dict)


def read_density_map(path: str | os.PathLike[str]) -> DensityFile:
    """The density map at ``path`` (see the module docstring); ``UserError`` naming the file otherwise."""
    from napari_m2mrf.io.formats import sniff_format
    from napari_m2mrf.io.workspace import Workspace

    path = Path(path)
    found = sniff_format(path)  # passes the path gate first (no FIFO, device, dangling link; exists)
    if found == "zarr" and Workspace.is_workspace(path):
        density, downsample = Workspace.open(path, mode="r").deformation()
        check_density_shape(density.shape, str(path))
        info = dict(Workspace.open(path, mode="r").deformation_source())
        return DensityFile(path, density, {"source": "workspace", "path": str(path.resolve()),
                                           "shape": list(density.shape), "stored_as": info})
    if path.is_file() and _is_npy(path):
        values = _load_npy(path)
    elif found in ("png", "jpeg", "tiff", "bmp"):
        from napari_m2mrf.io.photographs import read_image

        values = read_image(path).data.astype(np.float32).mean(axis=-1)
    else:
        raise UserError(f"{path}: not a density map; give a .npy array (Y, X), an image (PNG, JPEG, TIFF, BMP) "
                        "or a workspace (.m2mrf.zarr)")
    logger.info("%s: density map %d×%d (%s)", path, values.shape[1], values.shape[0], values.dtype)
    return DensityFile(path, values, {"source": "file", "path": str(path.resolve()), "sha256": _sha256(path),
                                      "shape": list(values.shape)})


def _is_npy(path: Path) -> bool:
    from napari_m2mrf.io.input_gate import read_head

    return read_head(path, len(NPY_MAGIC)) == NPY_MAGIC


def _load_npy(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` file after checking its header (no pickles, numbers, 2-D, within the limit)."""
    from numpy.lib import format as npy_format

    from napari_m2mrf.io.input_gate import check_pixels
    from napari_m2mrf.io.limits import current_limits

    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f".npy version {version[0]}.{version[1]} is not read here (1.0 or 2.0)")
            shape, _, dtype = readers[version](handle, max_header_size=MAX_NPY_HEADER)
            offset = handle.tell()
    except (ValueError, SyntaxError, EOFError) as exc:
        raise InputRefused(f"{path}: not a readable .npy array ({' '.join(str(exc).split())[:200]})") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputRefused(f"{path}: a density map must hold numbers; the array holds {dtype}")
    check_density_shape(tuple(shape), str(path))
    limits = current_limits()
    check_pixels(path, int(shape[0]), int(shape[1]), limits.max_image_pixels, "max_image_pixels", limits)
    if offset + int(np.prod(shape)) * dtype.itemsize > size:
        raise InputRefused(f"{path}: the file is shorter than its {shape[1]}×{shape[0]} {dtype} array (truncated)")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_density_map(path: str | os.PathLike[str], density: np.ndarray) -> Path:
    """Store ``density`` ``(Y, X)`` as float32 ``.npy`` at ``path`` (written aside, then renamed)."""
    from napari_m2mrf.io.atomic import atomic_path

    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise UserError(f"{path}: a density map is exported as .npy")
    density = np.asarray(density, np.float32)
    check_density_shape(density.shape, str(path))
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, density, allow_pickle=False)
    return path
