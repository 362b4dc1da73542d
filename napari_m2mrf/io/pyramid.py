"""Multiresolution images and label maps as lists of lazy arrays (no pixel is read on creation)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class Pyramid:
    """An image pyramid.

    ``levels[k]``: array-like of shape ``(C, Y_k, X_k)`` (zarr array or :class:`~.arrays.AxesView`),
    level 0 at full resolution; ``downsamples[k]``: level ``k``'s pixel spacing over level 0's
    (1.0, then e.g. 2.0, 4.0 or 4.0, 16.0 for Aperio); ``pixel_size_um``: level-0 pixel size in µm
    (None when the file does not say). ``keep_alive`` holds open file handles/stores.
    """

    levels: list[Any]
    downsamples: list[float]
    pixel_size_um: float | None
    name: str
    source: Path
    keep_alive: list[Any] = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Level-0 shape ``(C, Y, X)``."""
        return tuple(self.levels[0].shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.levels[0].dtype)

    def channel_last(self) -> list[Any]:
        """Per level a lazy dask array ``(Y_k, X_k, C)`` (what napari shows with ``rgb=True``)."""
        return [_as_dask(level).transpose(1, 2, 0) for level in self.levels]

    def level_for_downsample(self, factor: float) -> int:
        """The coarsest level whose downsample does not exceed ``factor`` (0 if none is that fine)."""
        usable = [k for k, d in enumerate(self.downsamples) if d <= factor * (1 + 1e-6)]
        level = usable[-1] if usable else 0
        logger.debug("%s: level %d (downsample %g) for a downsample of %g", self.name, level, self.downsamples[level], factor)
        return level


@dataclass
class LabelPyramid:
    """A label map at several resolutions.

    ``levels[k]``: array-like ``(Y_k, X_k)`` uint8 (0 background, 1.. classes); ``downsamples`` as
    in :class:`Pyramid`; ``colors``/``names`` by label value (RGBA in 0..1).
    """

    levels: list[Any]
    downsamples: list[float]
    colors: dict[int, tuple[float, ...]]
    names: dict[int, str]
    name: str
    keep_alive: list[Any] = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.levels[0].shape)  # type: ignore[return-value]

    def lazy_levels(self) -> list[Any]:
        """Per level a lazy dask array ``(Y_k, X_k)``."""
        return [_as_dask(level) for level in self.levels]


def _as_dask(array: Any) -> Any:
    import dask.array as da

    chunks = getattr(array, "chunks", None)
    if isinstance(array, da.Array):
        return array
    return da.from_array(
        array, chunks=chunks if chunks else "auto", name=False, asarray=True, fancy=False, lock=False
    )
