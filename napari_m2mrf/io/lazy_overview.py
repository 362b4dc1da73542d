"""Coarser levels computed on demand for a slide that has too few of its own (a huge flat tiled image).

A single-level tiled TIFF of 100,000² pixels (or an SVS whose coarsest level is still huge) would
otherwise need a whole pyramid built before napari can show it (minutes). :func:`with_overview_levels`
adds levels at factors 2, 4, 8, … below the coarsest level the file has, until the longest side fits
in :data:`OVERVIEW_SIDE` pixels; nothing is read when they are made.

Each added level is an :class:`OverviewLevel`: a **strided (nearest) subsample** of the base level,
not a mean. Output pixel ``(i, j)`` of a level with factor ``f`` is the base pixel at
``(i·f + f//2, j·f + f//2)`` (the centre of its block). An exact mean of the coarsest level of a
100,000² image would need every tile of the file decoded; a subsample needs only the tiles under the
sample positions, and at most :data:`MAX_TILES_PER_CHUNK` of them per output chunk: where a chunk's
samples fall into more base tile rows (columns) than ``√MAX_TILES_PER_CHUNK``, the rows (columns) are
taken in groups that share one sample, so the coarsest levels of a very large image show as blocks
(a nearest-neighbour view of a still coarser subsample) until the user zooms in, where finer levels
are exact subsamples. Showing the coarsest level therefore decodes at most
``chunks of that level × MAX_TILES_PER_CHUNK`` tiles, however large the image.

Computed chunks are kept in a bounded in-memory LRU (:class:`ChunkCache`, :data:`CACHE_BYTES`, one per
opened image): nothing is written next to the user's file or anywhere else. A persistent pyramid
(exact 2×2 means) is still what ``napari-m2mrf convert`` and the slide segmentation job build.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np

from napari_m2mrf.io.arrays import LazyArray
from napari_m2mrf.io.pyramid import Pyramid

# Overview levels are added until the longest side is at most this many pixels.
OVERVIEW_SIDE = 1024
# Output chunk side of an overview level (pixels).
OVERVIEW_CHUNK = 256
# At most this many base tiles are decoded for one output chunk (16 tile rows × 16 tile columns).
MAX_TILES_PER_CHUNK = 256
# Samples inside one rectangle of tiles up to this size (decoded) are read in one call, else tile by tile.
REGION_BYTES = 64 << 20
# Computed overview chunks kept in memory per opened image.
CACHE_BYTES = 256 << 20


class ChunkCache:
    """A thread-safe LRU of computed chunks bounded by bytes."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: np.ndarray) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= dropped.nbytes


def needs_overview(pyramid: Pyramid, side: int = OVERVIEW_SIDE) -> bool:
    """True when the coarsest level is larger than ``side`` and can be read in parts (chunks smaller than it)."""
    coarsest = pyramid.levels[-1]
    chunks = tuple(getattr(coarsest, "chunks", None) or coarsest.shape)
    readable_in_parts = any(c < n for c, n in zip(chunks[-2:], coarsest.shape[-2:], strict=True))
    return max(coarsest.shape[-2:]) > side and readable_in_parts


def with_overview_levels(pyramid: Pyramid, side: int = OVERVIEW_SIDE, cache_bytes: int = CACHE_BYTES) -> Pyramid:
    """``pyramid`` plus on-demand :class:`OverviewLevel` levels below its coarsest one (nothing read now)."""
    if not needs_overview(pyramid, side):
        return pyramid
    base = pyramid.levels[-1]
    height, width = base.shape[-2:]
    factors = []
    factor = 2
    while True:
        factors.append(factor)
        if max(-(-height // factor), -(-width // factor)) <= side:
            break
        factor *= 2
    cache = ChunkCache(cache_bytes)
    added = [OverviewLevel(base, f, cache) for f in factors]
    base_downsample = pyramid.downsamples[-1]
    return replace(
        pyramid,
        levels=[*pyramid.levels, *added],
        downsamples=[*pyramid.downsamples, *(base_downsample * f for f in factors)],
        keep_alive=[*pyramid.keep_alive, cache],
    )


class OverviewLevel(LazyArray):
    """A ``(C, ⌈Y/f⌉, ⌈X/f⌉)`` strided subsample of ``base`` (``(C, Y, X)``), computed per output chunk.

    See the module docstring for the sampling rule and the tile bound. ``tiles_read`` counts base
    tile reads (for tests and benchmarks).
    """

    def __init__(self, base: Any, factor: int, cache: ChunkCache, chunk: int = OVERVIEW_CHUNK,
                 max_tiles: int = MAX_TILES_PER_CHUNK) -> None:
        self.base = base
        self.factor = int(factor)
        self.cache = cache
        channels, height, width = (int(n) for n in base.shape)
        self.shape = (channels, -(-height // factor), -(-width // factor))
        self.dtype = np.dtype(base.dtype)
        self.ndim = 3
        self.chunks = (channels, chunk, chunk)
        base_chunks = tuple(getattr(base, "chunks", None) or base.shape)
        self._tile = (int(base_chunks[-2]), int(base_chunks[-1]))
        self._per_axis = max(1, math.isqrt(max_tiles))
        reader = getattr(base, "read_tile", None)  # TiffTiles: one tile without the zarr store's overhead
        self._read_tile = reader if reader is not None and tuple(reader.tile) == self._tile else None
        self.tiles_read = 0

    def __repr__(self) -> str:
        return f"OverviewLevel(1/{self.factor} of {self.base!r}, {self.shape})"

    def __getitem__(self, key: Any) -> np.ndarray:
        from napari_m2mrf.io.arrays import _bounds, _full_key, _is_scalar

        channel, rows, cols = _full_key(key, 3)
        y0, y1, ystep = _bounds(rows, self.shape[1])
        x0, x1, xstep = _bounds(cols, self.shape[2])
        if ystep < 0 or xstep < 0:
            raise IndexError("negative steps are not supported on an overview level")
        out = np.zeros((self.shape[0], max(0, y1 - y0), max(0, x1 - x0)), self.dtype)
        size = self.chunks[1]
        for cy in range(y0 // size, -(-y1 // size)) if y1 > y0 else ():
            for cx in range(x0 // size, -(-x1 // size)) if x1 > x0 else ():
                block = self._chunk(cy, cx)
                ay, by = max(y0, cy * size), min(y1, (cy + 1) * size)
                ax, bx = max(x0, cx * size), min(x1, (cx + 1) * size)
                out[:, ay - y0 : by - y0, ax - x0 : bx - x0] = block[:, ay - cy * size : by - cy * size, ax - cx * size : bx - cx * size]
        out = out[:, ::ystep, ::xstep][channel]
        if _is_scalar(rows):
            out = out[..., 0, :]
        if _is_scalar(cols):
            out = out[..., 0]
        return out

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        key = (id(self), cy, cx)
        found = self.cache.get(key)
        if found is not None:
            return found
        size = self.chunks[1]
        ys = self._samples(cy * size, min((cy + 1) * size, self.shape[1]), self.base.shape[1], self._tile[0])
        xs = self._samples(cx * size, min((cx + 1) * size, self.shape[2]), self.base.shape[2], self._tile[1])
        block = self._gather(ys, xs)
        self.cache.put(key, block)
        return block

    def _samples(self, start: int, stop: int, length: int, tile: int) -> np.ndarray:
        """Base coordinates sampled by output pixels ``start..stop``, grouped to touch at most ``_per_axis`` tiles."""
        positions = np.minimum(np.arange(start, stop, dtype=np.int64) * self.factor + self.factor // 2, length - 1)
        if len(np.unique(positions // tile)) <= self._per_axis:
            return positions
        groups = np.array_split(np.arange(len(positions)), self._per_axis)
        return np.concatenate([np.full(len(g), positions[g[len(g) // 2]]) for g in groups if len(g)])

    def _gather(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """``base[:, ys][:, :, xs]``, reading each base tile under the samples once."""
        th, tw = self._tile
        tile_rows, tile_cols = np.unique(ys // th), np.unique(xs // tw)
        out = np.empty((self.shape[0], len(ys), len(xs)), self.dtype)
        contiguous = len(tile_rows) == tile_rows[-1] - tile_rows[0] + 1 and len(tile_cols) == tile_cols[-1] - tile_cols[0] + 1
        region_bytes = (int(ys.max() - ys.min()) + 1) * (int(xs.max() - xs.min()) + 1) * out.shape[0] * self.dtype.itemsize
        if contiguous and region_bytes <= REGION_BYTES:  # one read of the rectangle of tiles (the zarr store fetches them together)
            ry0, rx0 = int(ys.min()), int(xs.min())
            region = np.asarray(self.base[:, ry0 : int(ys.max()) + 1, rx0 : int(xs.max()) + 1])
            self.tiles_read += len(tile_rows) * len(tile_cols)
            return np.ascontiguousarray(region[:, ys - ry0][:, :, xs - rx0])
        for tr in tile_rows:
            row_pick = np.nonzero(ys // th == tr)[0]
            sub_y = ys[row_pick]
            for tc in tile_cols:
                col_pick = np.nonzero(xs // tw == tc)[0]
                sub_x = xs[col_pick]
                if self._read_tile is not None:  # the file's own tile, decoded directly (TIFF)
                    piece, ty0, tx0 = self._read_tile(int(tr), int(tc)), int(tr) * th, int(tc) * tw
                else:
                    ty0, tx0 = int(sub_y.min()), int(sub_x.min())
                    piece = np.asarray(self.base[:, ty0 : int(sub_y.max()) + 1, tx0 : int(sub_x.max()) + 1])
                self.tiles_read += 1
                out[:, row_pick[:, None], col_pick[None, :]] = piece[:, sub_y - ty0][:, :, sub_x - tx0]
        return out
