"""A procedural H&E-like slide pyramid, rendered chunk by chunk on read (no slide file needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_m2mrf.io.pyramid import Pyramid


class SyntheticSlideLevel:
    """One level ``(3, Y, X)`` uint8 of a procedural H&E-like slide, rendered chunk by chunk on read.

    Pixel ``(r, c)`` of a level with downsample ``f`` is the slide's colour at level-0 position
    ``((r + 0.5)·f − 0.5, (c + 0.5)·f − 0.5)``: a smooth tissue field (a 48×48 random grid,
    bilinear), a few dozen round "tumour" regions, and a fine nuclear texture whose contrast fades
    at coarse levels as area averaging would. ``chunks`` tells the pyramid sampler the 512² grid.
    """

    CHUNK = 512

    def __init__(self, side: int, downsample: int, seed: int = 0) -> None:
        self.side, self.downsample = side, downsample
        length = -(-side // downsample)
        self.shape = (3, length, length)
        self.dtype = np.dtype(np.uint8)
        self.chunks = (3, self.CHUNK, self.CHUNK)
        self.ndim = 3
        rng = np.random.default_rng(seed)
        self._field = rng.random((48, 48)).astype(np.float32)
        count = 40
        # (centre row, centre column, radius) in level-0 pixels
        self._regions = np.column_stack(
            [rng.uniform(0.1, 0.9, count) * side, rng.uniform(0.1, 0.9, count) * side,
             rng.uniform(0.005, 0.03, count) * side]
        )

    def _weights(self, positions: np.ndarray) -> np.ndarray:
        """Bilinear weights ``(n, 48)`` of the coarse field's grid at level-0 positions ``(n,)``."""
        grid = positions / self.side * 47.0
        low = np.clip(np.floor(grid).astype(np.int64), 0, 46)
        frac = (grid - low).astype(np.float32)
        weights = np.zeros((len(positions), 48), np.float32)
        rows = np.arange(len(positions))
        weights[rows, low] = 1 - frac
        weights[rows, low + 1] = frac
        return weights

    def render(self, rows: slice, cols: slice) -> np.ndarray:
        """``(3, h, w)`` uint8 of the given level pixel rows and columns (steps of 1)."""
        f = self.downsample
        y = (np.arange(rows.start, rows.stop) + 0.5) * f - 0.5
        x = (np.arange(cols.start, cols.stop) + 0.5) * f - 0.5
        tissue = self._weights(y) @ self._field @ self._weights(x).T
        tissue = np.clip((tissue - 0.35) * 4.0, 0.0, 1.0)
        detail = max(0.0, 1.0 - f / 16.0)  # nuclei (period ~12 px) average out at coarse levels
        texture = detail * (np.sin(y * 0.53)[:, None] * np.sin(x * 0.47)[None, :]) ** 2
        tumour = np.zeros_like(tissue)
        for cy, cx, radius in self._regions:
            if cy + radius < y[0] or cy - radius > y[-1] or cx + radius < x[0] or cx - radius > x[-1]:
                continue
            inside = ((y[:, None] - cy) ** 2 + (x[None, :] - cx) ** 2) < radius**2
            tumour = np.maximum(tumour, inside.astype(np.float32))
        haem = tissue * (0.15 + 0.5 * texture + 0.45 * tumour)
        eosin = tissue * (0.5 - 0.2 * tumour)
        red = 245 - 80 * haem - 30 * eosin
        green = 245 - 170 * haem - 120 * eosin
        blue = 245 - 40 * haem - 60 * eosin
        return np.clip(np.stack([red, green, blue]), 0, 255).astype(np.uint8)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (3 - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        channel, rows, cols = key
        if not all(isinstance(k, slice) for k in (rows, cols)):
            raise TypeError("SyntheticSlideLevel reads slices of rows and columns only")
        rows = slice(*rows.indices(self.shape[1]))
        cols = slice(*cols.indices(self.shape[2]))
        if rows.step != 1 or cols.step != 1:
            raise TypeError("SyntheticSlideLevel reads contiguous slices only")
        return self.render(rows, cols)[channel]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        full = self[:]
        return full.astype(dtype) if dtype is not None else full


def synthetic_pyramid(side: int, source: Path, coarsest: int = 512) -> Pyramid:
    """A :class:`~napari_m2mrf.io.pyramid.Pyramid` of :class:`SyntheticSlideLevel` (downsamples 1, 2,
    4, …) down to the first level of at most ``coarsest`` px per side; 0.25 µm pixels at level 0."""
    from napari_m2mrf.io.pyramid import Pyramid

    levels, downsamples, factor = [], [], 1
    while True:
        levels.append(SyntheticSlideLevel(side, factor))
        downsamples.append(float(factor))
        if side // factor <= coarsest:
            break
        factor *= 2
    return Pyramid(levels=levels, downsamples=downsamples, pixel_size_um=0.25, name="synthetic", source=source)
