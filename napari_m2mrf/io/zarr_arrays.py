"""Creating the zarr arrays of a pyramid level, in the group's zarr format (2 or 3)."""

from __future__ import annotations

from typing import Any

import numpy as np

ZSTD_LEVEL = 1


def create_array(group: Any, name: str, shape: tuple[int, ...], dtype: Any, chunk: int, axes: str) -> Any:
    """Create (overwrite) array ``name`` in ``group``: spatial chunks ``chunk × chunk``, all channels per chunk.

    ``axes`` names the dimensions (``"cyx"``, ``"yx"``, ``"kyx"``…). Zstd-compressed; chunks equal to
    the fill value are stored too, so a missing chunk always means an incomplete write.
    """
    chunks = tuple(min(n, chunk) if axis in "yx" else n for axis, n in zip(axes, shape, strict=True))
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
