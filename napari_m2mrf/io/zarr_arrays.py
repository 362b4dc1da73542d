"""Creating zarr arrays in the group's zarr format (2 or 3), zstd-compressed, every chunk stored."""

from __future__ import annotations

from typing import Any

import numpy as np

ZSTD_LEVEL = 1


def spatial_chunks(shape: tuple[int, ...], axes: str, chunk: int) -> tuple[int, ...]:
    """Chunks of ``chunk`` along ``y``/``x`` and the whole length along every other axis."""
    return tuple(min(n, chunk) if axis in "yx" else n for axis, n in zip(axes, shape, strict=True))


def create_array(
    group: Any, name: str, shape: tuple[int, ...], dtype: Any, chunk: int | tuple[int, ...], axes: str
) -> Any:
    """Create (overwrite) array ``name`` in ``group`` with dimensions named by ``axes`` (``"cyx"``, ``"yx"``…).

    ``chunk``: the spatial chunk side (other axes whole) or explicit chunks. Chunks equal to the
    fill value are stored too, so a missing chunk always means an incomplete write.
    """
    chunks = spatial_chunks(shape, axes, chunk) if isinstance(chunk, int) else tuple(chunk)
    kwargs: dict[str, Any] = {
        "name": name,
        "shape": tuple(shape),
        "chunks": chunks,
        "dtype": np.dtype(dtype),
        "fill_value": 0,
        "overwrite": True,
        "config": {"write_empty_chunks": True},
    }
    if group.metadata.zarr_format == 3:
        from zarr.codecs import ZstdCodec

        kwargs["compressors"] = [ZstdCodec(level=ZSTD_LEVEL)]
        kwargs["dimension_names"] = tuple(axes)
    else:
        from numcodecs import Zstd

        kwargs["compressors"] = [Zstd(level=ZSTD_LEVEL)]
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return group.create_array(**kwargs)
