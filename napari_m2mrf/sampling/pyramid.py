"""Pyramid-aware sampling of a slide at sampling coordinates, reading only the chunks that hold samples.

A deformed grid over a gigapixel slide places a few hundred thousand samples with spacings from a
few to hundreds of level-0 pixels. Reading every sample from level 0 would alias (a bilinear read
ignores everything between samples) and decode the whole slide. Instead each sample is read,
bilinearly, from the coarsest pyramid level whose pixel spacing is still at most the local sample
spacing: pyramid levels are area averages of level 0, so the level acts as the low-pass filter
the sample spacing calls for (as mip-mapping does), and only the chunks under the samples of each
level are decoded.

Conventions (as :mod:`napari_m2mrf.models.deform`): positions are ``(y, x)`` in level-0 pixels,
pixel centres at integers; a level with downsample factors ``(f_y, f_x)`` has its pixel ``(r, c)``
centred at level-0 ``((r + 0.5)·f_y − 0.5, (c + 0.5)·f_x − 0.5)``. Level arrays are anything with
``shape`` and numpy-style slicing (zarr, dask, numpy), channel axis first ``(C, Y, X)`` by default
(NGFF) or anywhere else via ``channel_axis``; values come back channel-last ``(…, C)``, float32,
in the levels' units (0–255 for uint8 slides).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

Factors = float | tuple[float, float]

DEFAULT_CHUNK = 512  # chunk grid assumed for arrays that do not declare one (numpy)


@dataclass
class ReadStats:
    """What a sampling call read: chunks per level and the bytes those chunks hold once decoded."""

    chunks_per_level: dict[int, int] = field(default_factory=dict)
    bytes_decoded: int = 0

    @property
    def chunks(self) -> int:
        return sum(self.chunks_per_level.values())


@dataclass
class PyramidSamples:
    """``values`` ``(…, C)`` float32 at each position, the ``level`` each was read from, and the reads."""

    values: np.ndarray
    level: np.ndarray
    stats: ReadStats


def _factors(downsample: Factors) -> tuple[float, float]:
    fy, fx = (downsample, downsample) if np.isscalar(downsample) else downsample
    return float(fy), float(fx)


def local_spacing(points: np.ndarray) -> np.ndarray:
    """Local sample spacing ``(h, w)`` in level-0 pixels of a sampling grid ``(h, w, 2)`` of ``(y, x)``.

    The longer of the two grid steps at each sample (central differences, one-sided at the
    edges), as mip-map level selection does, so no direction is undersampled.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be a (h, w, 2) grid of (y, x); got {points.shape}")
    steps = [
        np.linalg.norm(np.gradient(points, axis=axis), axis=-1) if points.shape[axis] > 1 else None for axis in (0, 1)
    ]
    steps = [s for s in steps if s is not None]
    if not steps:
        return np.zeros(points.shape[:2])
    return np.maximum.reduce(steps)


def choose_levels(spacing: np.ndarray, downsamples: Sequence[Factors]) -> np.ndarray:
    """Index of the coarsest level whose pixel spacing (its larger factor) is at most ``spacing`` (level 0 if none)."""
    pitches = np.array([max(_factors(f)) for f in downsamples])
    if np.any(np.diff(pitches) <= 0) or pitches[0] <= 0:
        raise ValueError(f"downsample factors must be positive and increase with the level (got {list(downsamples)})")
    level = np.searchsorted(pitches, np.asarray(spacing) * (1 + 1e-9), side="right") - 1
    return np.clip(level, 0, len(pitches) - 1).astype(np.int8)


def _chunk_shape(array, channel_axis: int | None) -> tuple[int, int]:
    """``(chunk_y, chunk_x)`` of a level array's chunk grid."""
    chunks = getattr(array, "chunks", None)
    if chunks is None:
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    sizes = [c[0] if isinstance(c, tuple) else c for c in chunks]  # dask gives tuples of chunk sizes
    if channel_axis is not None:
        del sizes[channel_axis % len(sizes)]
    return int(sizes[0]), int(sizes[1])


def _chunk_nbytes(array, channel_axis: int | None) -> int:
    cy, cx = _chunk_shape(array, channel_axis)
    channels = array.shape[channel_axis] if channel_axis is not None else 1
    return cy * cx * channels * np.dtype(array.dtype).itemsize


def _read_chunk(array, channel_axis: int | None, rows: slice, cols: slice) -> np.ndarray:
    """One chunk as ``(rows, cols, C)`` float32."""
    if channel_axis is None:
        return np.asarray(array[rows, cols], dtype=np.float32)[..., None]
    index: list[slice] = [slice(None)] * 3
    spatial = [a for a in range(3) if a != channel_axis % 3]
    index[spatial[0]], index[spatial[1]] = rows, cols
    block = np.asarray(array[tuple(index)], dtype=np.float32)
    return np.moveaxis(block, channel_axis, -1)


def _sample_level(
    array, factors: tuple[float, float], positions: np.ndarray, channel_axis: int | None, workers: int
) -> tuple[np.ndarray, int]:
    """Bilinear values ``(n, C)`` at level-0 ``positions`` ``(n, 2)`` from one level; also chunks read."""
    spatial = [s for a, s in enumerate(array.shape) if channel_axis is None or a != channel_axis % array.ndim]
    height, width = spatial
    chunk_y, chunk_x = _chunk_shape(array, channel_axis)
    fy, fx = factors
    y = np.clip((positions[:, 0] + 0.5) / fy - 0.5, 0, height - 1)
    x = np.clip((positions[:, 1] + 0.5) / fx - 0.5, 0, width - 1)
    y_lo, x_lo = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    wy, wx = (y - y_lo).astype(np.float32), (x - x_lo).astype(np.float32)
    y_hi, x_hi = np.minimum(y_lo + 1, height - 1), np.minimum(x_lo + 1, width - 1)
    corner_rows = np.stack((y_lo, y_lo, y_hi, y_hi), axis=1).ravel()  # n·4 corners: (lo,lo) (lo,hi) (hi,lo) (hi,hi)
    corner_cols = np.stack((x_lo, x_hi, x_lo, x_hi), axis=1).ravel()
    columns_of_chunks = -(-width // chunk_x)
    key = (corner_rows // chunk_y) * columns_of_chunks + corner_cols // chunk_x
    order = np.argsort(key, kind="stable")
    keys, starts = np.unique(key[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    channels = array.shape[channel_axis] if channel_axis is not None else 1
    corners = np.empty((len(key), channels), dtype=np.float32)

    def read(i: int) -> None:
        cy, cx = divmod(int(keys[i]), columns_of_chunks)
        rows = slice(cy * chunk_y, min((cy + 1) * chunk_y, height))
        cols = slice(cx * chunk_x, min((cx + 1) * chunk_x, width))
        block = _read_chunk(array, channel_axis, rows, cols)
        members = order[starts[i] : ends[i]]
        corners[members] = block[corner_rows[members] - rows.start, corner_cols[members] - cols.start]

    if workers > 1 and len(keys) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(read, range(len(keys))))
    else:
        for i in range(len(keys)):
            read(i)
    c = corners.reshape(-1, 4, channels)
    top = c[:, 0] + (c[:, 1] - c[:, 0]) * wx[:, None]
    bottom = c[:, 2] + (c[:, 3] - c[:, 2]) * wx[:, None]
    return top + (bottom - top) * wy[:, None], len(keys)


def sample_pyramid(
    levels: Sequence,
    downsamples: Sequence[Factors],
    points: np.ndarray,
    channel_axis: int | None = 0,
    spacing: np.ndarray | None = None,
    workers: int = 1,
) -> PyramidSamples:
    """Sample a pyramid at ``points`` (``(h, w, 2)`` level-0 ``(y, x)``), each from the level that resolves it.

    Args:
        levels: level arrays, finest first (level 0 = full resolution).
        downsamples: per level, its downsample factor relative to level 0 (a number or ``(f_y, f_x)``).
        points: sampling grid; any ``(…, 2)`` works when ``spacing`` is given.
        channel_axis: axis of the colour channels in each level array (``0`` for NGFF ``(C, Y, X)``,
            ``-1`` for ``(Y, X, C)``, ``None`` for single-channel ``(Y, X)``).
        spacing: local sample spacing ``(…)`` in level-0 pixels (default :func:`local_spacing`).
        workers: threads decoding chunks.
    """
    if len(levels) != len(downsamples) or not levels:
        raise ValueError(f"need one downsample factor per level (got {len(levels)} levels, {len(downsamples)} factors)")
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1] != 2 or not np.isfinite(points).all():
        raise ValueError("points must be finite (y, x) positions with shape (..., 2)")
    spacing = local_spacing(points) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if spacing.shape != points.shape[:-1]:
        raise ValueError(f"spacing shape {spacing.shape} does not match points shape {points.shape}")
    level_of = choose_levels(spacing, downsamples).reshape(-1)
    flat = points.reshape(-1, 2)
    channels = levels[0].shape[channel_axis] if channel_axis is not None else 1
    values = np.empty((len(flat), channels), dtype=np.float32)
    stats = ReadStats()
    for index in np.unique(level_of):
        members = np.flatnonzero(level_of == index)
        array = levels[int(index)]
        values[members], chunks = _sample_level(
            array, _factors(downsamples[int(index)]), flat[members], channel_axis, workers
        )
        stats.chunks_per_level[int(index)] = chunks
        stats.bytes_decoded += chunks * _chunk_nbytes(array, channel_axis)
    if logger.isEnabledFor(logging.DEBUG):
        counts = np.bincount(level_of, minlength=len(levels))
        logger.debug(
            "%d samples read from levels %s (%d chunks, %.1f MB decoded)",
            len(flat), ", ".join(f"{k}: {n}" for k, n in enumerate(counts) if n),
            stats.chunks, stats.bytes_decoded / 1e6,
        )
    return PyramidSamples(values.reshape(*points.shape[:-1], channels), level_of.reshape(points.shape[:-1]), stats)


def level_bytes(array, channel_axis: int | None = 0) -> int:
    """Bytes of a whole level once decoded (every chunk of its chunk grid)."""
    chunk_y, chunk_x = _chunk_shape(array, channel_axis)
    spatial = [s for a, s in enumerate(array.shape) if channel_axis is None or a != channel_axis % array.ndim]
    count = math.ceil(spatial[0] / chunk_y) * math.ceil(spatial[1] / chunk_x)
    return count * _chunk_nbytes(array, channel_axis)
