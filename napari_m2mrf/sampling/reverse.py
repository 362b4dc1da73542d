"""Reverse sampler Π∘G⁻¹ of deformed downsampling: any region of any pyramid level, chunk in → chunk out.

Each low-resolution prediction sits at its sampling location ``(u, v)``; every pixel takes the
value of the sample nearest to the pixel's centre (the paper's Π is nearest-neighbour). Distances
are Euclidean in level-0 pixels, sample positions are continuous (not rounded), and a pixel
``(r, c)`` of a level with downsample factors ``(f_y, f_x)`` has its centre at level-0 position
``((r + 0.5)·f_y − 0.5, (c + 0.5)·f_x − 0.5)`` (the ``align_corners=False`` convention of
:mod:`napari_m2mrf.models.deform`). The result equals scipy's ``NearestNDInterpolator`` built on the
same positions, except where two samples are at exactly the same distance.

Algorithm (exact, no full-resolution map): the region is cut into ``T×T`` tiles (``T`` ≈ the mean
sample spacing). Each tile needs the samples within ``d₁ + 2ρ`` of its centre (``d₁``: nearest-sample
distance of the centre, ``ρ``: half-diagonal of the tile) — a superset of the nearest samples of all
its pixels, because the nearest-sample distance is 1-Lipschitz. The samples of a row band are
bucketed by tile and each tile measures those of the 5×5 tiles around it; where ``d₁ + 2ρ`` stays
inside that window (nearly everywhere), they hold the whole superset, elsewhere a k-d tree over the
samples is asked. Tiles are then split into quarters;
each quarter keeps only the candidates that are closer than the quarter centre's nearest candidate at
one of its corner pixels (a difference of squared distances is linear in the position, so a sample
that loses at every corner loses everywhere in the quarter), and a quarter left with a single
candidate is filled with it at once. Only 8×8 blocks near Voronoi edges reach the per-pixel
comparison (a running minimum) with their few remaining candidates — splitting them further costs
more in bookkeeping than it saves in comparisons. Regions are filled in blocks of at most 2²¹ pixels,
full-width row bands where the region is at most 16384 pixels wide, so each block's output window
is contiguous (optionally on several threads); memory is the output plus a bounded working set,
the samples (and, where needed, their k-d tree).
"""

from __future__ import annotations

import copy
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

Factors = float | tuple[float, float]

_BLOCK_PIXELS = 1 << 21  # regions are filled in blocks of at most this many pixels …
_BLOCK_WIDTH = 1 << 14  # … as full-width row bands of regions up to this wide (contiguous output windows)
_WINDOW = 2  # a tile looks for candidates among the samples of the (2·_WINDOW + 1)² tiles around it …
_FIRST_K = 16  # … and where those may not be all, asks the k-d tree for this many (doubled where too few)
_DIRECT = 8  # blocks this small compare every pixel with every candidate
_DIRECT_BATCH = 1 << 16  # pixels per batch of that comparison


def _factors(downsample: Factors) -> tuple[float, float]:
    fy, fx = (downsample, downsample) if np.isscalar(downsample) else downsample
    if not (fy > 0 and fx > 0):
        raise ValueError(f"downsample factors must be positive (got {downsample!r})")
    return float(fy), float(fx)


def _squared_offsets(offsets: np.ndarray, half: int, scale: np.float32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``scale·(offset − p)²`` for ``p`` at the centres of a block's two halves (pixels ``(half − 1)/2`` and
    ``half + (half − 1)/2``) and at its half's edge pixels ``0, half − 1, half, 2·half − 1``."""

    def squared(position: float) -> np.ndarray:
        difference = offsets - np.float32(position)
        difference *= difference
        difference *= scale
        return difference

    centre = (half - 1) / 2
    return [squared(centre), squared(half + centre)], [squared(p) for p in (0, half - 1, half, 2 * half - 1)]


def _running_nearest(dy: np.ndarray, dx: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Nearest of ``K`` candidates ``(K, blocks)`` at every pixel of each block, given their squared
    distances to the block's rows ``dy`` and columns ``dx`` (``K × blocks × size``): ``blocks × size × size``."""
    best = dy[0][:, :, None] + dx[0][:, None, :]
    nearest = np.empty(best.shape, dtype=candidates.dtype)
    nearest[...] = candidates[0][:, None, None]
    d2 = np.empty_like(best)
    closer = np.empty(best.shape, dtype=bool)
    for k in range(1, len(candidates)):
        np.add(dy[k][:, :, None], dx[k][:, None, :], out=d2)
        np.less(d2, best, out=closer)
        np.minimum(best, d2, out=best)
        np.copyto(nearest, candidates[k][:, None, None], where=closer)
    return nearest


@dataclass
class _Group:
    """Blocks of size ``size`` (pixel rows ``rows``, columns ``cols`` of their top-left pixel, relative
    to the region) and their candidate samples ``candidates`` (n×K, the sentinel ``N`` pads)."""

    size: int
    rows: np.ndarray
    cols: np.ndarray
    candidates: np.ndarray


def _merged(groups: list[_Group]) -> _Group:
    """One group of the blocks of ``groups`` (same block size and width)."""
    if len(groups) == 1:
        return groups[0]
    return _Group(groups[0].size, np.concatenate([g.rows for g in groups]), np.concatenate([g.cols for g in groups]),
                  np.concatenate([g.candidates for g in groups]))


def _group_widths(limit: int = 1 << 32) -> np.ndarray:
    """Candidate-list widths 1, 2, 3, 4, 6, 9, 13, … (each half as wide again) up to ``limit``."""
    widths = [1]
    while widths[-1] < limit:
        widths.append(widths[-1] + max(1, widths[-1] // 2))
    return np.array(widths)


_WIDTHS = _group_widths()  # blocks are grouped by the narrowest of these that holds their candidates


def _compact(
    size: int, rows: np.ndarray, cols: np.ndarray, block: np.ndarray, values: np.ndarray, count: np.ndarray,
    sentinel: int,
) -> list[_Group]:
    """Blocks (``rows``, ``cols``) with their candidates as groups of similar width (``_WIDTHS``, padded
    with ``sentinel``). ``block``, ``values``: (block index, candidate) pairs sorted by block;
    ``count``: how many candidates each block has (at least one)."""
    slot = np.arange(len(block)) - (np.cumsum(count) - count)[block]
    group_of = np.searchsorted(_WIDTHS, count).astype(np.uint8)  # stable sorts of uint8 are radix sorts
    blocks_by_group = np.argsort(group_of, kind="stable")
    pairs_by_group = np.argsort(group_of[block], kind="stable")
    block_counts = np.bincount(group_of, minlength=len(_WIDTHS))
    pair_counts = np.bincount(group_of[block], minlength=len(_WIDTHS))
    block_starts, pair_starts = np.cumsum(block_counts) - block_counts, np.cumsum(pair_counts) - pair_counts
    position = np.empty(len(count), dtype=np.int64)  # of each block within its group
    groups = []
    for g in np.flatnonzero(block_counts):
        chosen = blocks_by_group[block_starts[g] : block_starts[g] + block_counts[g]]
        pairs = pairs_by_group[pair_starts[g] : pair_starts[g] + pair_counts[g]]
        position[chosen] = np.arange(len(chosen))
        narrowed = np.full((len(chosen), int(_WIDTHS[g])), sentinel, dtype=np.int64)
        narrowed[position[block[pairs]], slot[pairs]] = values[pairs]
        groups.append(_Group(size, rows[chosen], cols[chosen], narrowed))
    return groups


class ReverseSampler:
    """Nearest-sample fill of any region of any pyramid level from ``N`` scattered samples.

    Args:
        points: sample positions ``(…, 2)`` as ``(y, x)`` in level-0 pixels (e.g. the ``h×w×2``
            output of :func:`napari_m2mrf.models.deform.grid_to_pixels`).
        values: per-sample values with the same leading shape as ``points[..., 0]`` (labels), or
            with one more leading channel axis ``(C, …)`` (probabilities).
        workers: threads that fill the blocks of a region (numpy releases the GIL in the heavy steps).
    """

    def __init__(self, points: np.ndarray, values: np.ndarray, workers: int = 1) -> None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim < 2 or points.shape[-1] != 2:
            raise ValueError(f"points must have shape (..., 2) as (y, x); got {points.shape}")
        spatial = points.shape[:-1]
        values = np.asarray(values)
        if values.shape == spatial:
            self.values = values.reshape(-1)
        elif values.shape[1:] == spatial:
            self.values = values.reshape(values.shape[0], -1)
        else:
            raise ValueError(f"values shape {values.shape} does not match points shape {points.shape}")
        self.points = points.reshape(-1, 2)
        if len(self.points) == 0:
            raise ValueError("no samples")
        if not np.isfinite(self.points).all():
            raise ValueError("sample positions must be finite")
        self.workers = workers
        self._tree: cKDTree | None = None  # built on first need (tiles whose window may miss candidates)
        self._by_row = np.argsort(self.points[:, 0], kind="stable")  # samples by y, to find a row band's
        self._sorted_rows = self.points[self._by_row, 0]
        low, high = self.points.min(axis=0), self.points.max(axis=0)
        self._mean_spacing = math.sqrt(max(1.0, float(np.prod(high - low + 1.0))) / len(self.points))
        # padded with an unreachable sentinel sample at index N
        self._py = np.append(self.points[:, 0], np.inf)
        self._px = np.append(self.points[:, 1], np.inf)

    def with_values(self, values: np.ndarray) -> ReverseSampler:
        """The same samples (and their sorted order) carrying other per-sample ``values`` (for example the
        probabilities beside the labels), without re-sorting the positions."""
        other = copy.copy(self)
        values = np.asarray(values)
        count = len(self.points)
        if values.size == count:
            other.values = values.reshape(-1)
        elif values.ndim >= 2 and values[0].size == count:
            other.values = values.reshape(values.shape[0], -1)
        else:
            raise ValueError(f"values shape {values.shape} does not match {count} samples")
        return other

    def tree(self) -> cKDTree:
        """A k-d tree over the sample positions (built once, when first asked for)."""
        if self._tree is None:
            self._tree = cKDTree(self.points)
        return self._tree

    @property
    def num_samples(self) -> int:
        return len(self.points)

    @property
    def channels(self) -> int | None:
        """``C`` for per-sample vectors, ``None`` for scalar values."""
        return self.values.shape[0] if self.values.ndim == 2 else None

    def fill(self, rows: slice, cols: slice, downsample: Factors = 1.0) -> np.ndarray:
        """Values ``(ry, rx)`` or ``(C, ry, rx)`` of the region ``rows × cols`` (level pixel indices, step 1)."""
        shape = self._region_shape(rows, cols)
        out = np.empty((*self.values.shape[:-1], *shape), dtype=self.values.dtype)

        def write(window: tuple[slice, slice], index: np.ndarray) -> None:
            # straight into the output window, one channel at a time (mode="clip" writes without a buffer)
            if self.values.ndim == 1:
                np.take(self.values, index, out=out[window], mode="clip")
            else:
                for channel, values in enumerate(self.values):
                    np.take(values, index, out=out[(channel, *window)], mode="clip")

        self._for_each_block(rows, cols, downsample, write)
        return out

    def nearest_index(self, rows: slice, cols: slice, downsample: Factors = 1.0) -> np.ndarray:
        """Index (int64, into the flattened samples) of the nearest sample of every pixel of the region."""
        out = np.empty(self._region_shape(rows, cols), dtype=np.int64)

        def write(window: tuple[slice, slice], index: np.ndarray) -> None:
            out[window] = index

        self._for_each_block(rows, cols, downsample, write)
        return out

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _region_shape(rows: slice, cols: slice) -> tuple[int, int]:
        forward = rows.stop >= rows.start and cols.stop >= cols.start
        if rows.step not in (None, 1) or cols.step not in (None, 1) or not forward:
            raise ValueError(f"region must be two forward slices with explicit bounds and step 1 (got {rows}, {cols})")
        return rows.stop - rows.start, cols.stop - cols.start

    def _for_each_block(
        self, rows: slice, cols: slice, downsample: Factors, write: Callable[[tuple[slice, slice], np.ndarray], None]
    ) -> None:
        """Nearest-sample indices of the region block by block (row bands of ``_BLOCK_PIXELS``, at least one
        per worker), each handed to ``write(window, index)`` with the block's window relative to the region."""
        fy, fx = _factors(downsample)
        block_width = max(1, min(cols.stop - cols.start, _BLOCK_WIDTH))
        block_height = _BLOCK_PIXELS // block_width
        if self.workers > 1:  # at least one block per worker
            block_height = min(block_height, -(-(rows.stop - rows.start) // self.workers))
        blocks = [
            (by, min(by + block_height, rows.stop), bx, min(bx + block_width, cols.stop))
            for by in range(rows.start, rows.stop, block_height)
            for bx in range(cols.start, cols.stop, block_width)
        ]

        def run(block: tuple[int, int, int, int]) -> None:
            by, ey, bx, ex = block
            window = (slice(by - rows.start, ey - rows.start), slice(bx - cols.start, ex - cols.start))
            write(window, self._nearest_block(by, ey, bx, ex, fy, fx))

        if self.workers > 1 and len(blocks) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(run, blocks))
        else:
            for block in blocks:
                run(block)

    def _tile_size(self, fy: float, fx: float) -> int:
        """Power-of-two tile side ≈ the mean sample spacing in this level's pixels (4 … 64)."""
        spacing = self._mean_spacing / math.sqrt(fy * fx)
        return int(min(64, max(4, 2 ** round(math.log2(max(1.0, spacing))))))

    def _nearest_block(self, y0: int, y1: int, x0: int, x1: int, fy: float, fx: float) -> np.ndarray:
        tile = self._tile_size(fy, fx)
        ny, nx = -(-(y1 - y0) // tile) * tile, -(-(x1 - x0) // tile) * tile
        out = np.empty((ny, nx), dtype=np.int64)
        # sample positions in level pixels relative to the block's first pixel centre, float32
        # (small numbers, so float32 keeps ~1e-5 pixel precision); the sentinel stays at infinity
        local_y = ((self._py - ((y0 + 0.5) * fy - 0.5)) / fy).astype(np.float32)
        local_x = ((self._px - ((x0 + 0.5) * fx - 0.5)) / fx).astype(np.float32)
        self._refine(out, self._tile_candidates(y0, x0, ny, nx, tile, fy, fx), local_y, local_x, fy, fx)
        return out[: y1 - y0, : x1 - x0]

    def _tile_candidates(self, y0: int, x0: int, ny: int, nx: int, tile: int, fy: float, fx: float) -> list[_Group]:
        """Per tile, every sample that can be nearest to one of its pixels (groups of similar width).

        The samples of the row band are bucketed by tile; each tile measures the samples of the
        (2·_WINDOW + 1)² buckets around it. Where the nearest of them is at ``d₁`` and ``d₁ + 2ρ`` still
        lies inside that window, the window holds every sample within the bound; the other tiles ask
        the k-d tree.
        """
        rows, cols = np.meshgrid(np.arange(0, ny, tile), np.arange(0, nx, tile), indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        centre = (tile - 1) / 2
        centre_y, centre_x = (y0 + rows + centre + 0.5) * fy - 0.5, (x0 + cols + centre + 0.5) * fx - 0.5
        reach = 2 * centre * math.hypot(fy, fx)  # level-0 distance from a tile's centre to its farthest pixel, twice
        inner = (tile / 2 + _WINDOW * tile) * min(fy, fx)  # from a tile's centre to its window's edge, level 0
        candidate, tile_of = self._window_samples(y0, x0, ny // tile, nx // tile, tile, fy, fx)
        d2 = (self.points[candidate, 0] - centre_y[tile_of]) ** 2 + (self.points[candidate, 1] - centre_x[tile_of]) ** 2
        found = np.bincount(tile_of, minlength=len(rows))
        d1 = np.full(len(rows), np.inf)
        some = found > 0
        d1[some] = np.sqrt(np.minimum.reduceat(d2, (np.cumsum(found) - found)[some]))
        bound = d1 + reach + 1e-6 * (1 + d1)
        covered = bound < inner * (1 - 1e-9)
        keep = covered[tile_of] & (d2 <= bound[tile_of] ** 2)
        index_among_covered = np.cumsum(covered) - 1
        tiles = np.flatnonzero(covered)
        groups = _compact(tile, rows[tiles], cols[tiles], index_among_covered[tile_of[keep]], candidate[keep],
                          np.bincount(tile_of[keep], minlength=len(rows))[tiles], self.num_samples)
        rest = np.flatnonzero(~covered)
        if len(rest):
            groups += self._tree_candidates(rows[rest], cols[rest], np.stack((centre_y[rest], centre_x[rest]), axis=1),
                                            tile, reach)
        return groups

    def _window_samples(
        self, y0: int, x0: int, tiles_y: int, tiles_x: int, tile: int, fy: float, fx: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sample, tile) pairs, tile-major: every sample in the window of ``2·_WINDOW + 1`` tiles per side
        around each of the ``tiles_y × tiles_x`` tiles of the block (tile ``t`` is row ``t // tiles_x``)."""
        margin = _WINDOW * tile + 1
        band = self._by_row[np.searchsorted(self._sorted_rows, (y0 - margin) * fy, side="left"):
                            np.searchsorted(self._sorted_rows, (y0 + tiles_y * tile + margin) * fy, side="right")]
        # the bucket (tile row, column) of each sample, shifted by _WINDOW so the window never leaves the grid
        bucket_y = np.floor((self.points[band, 0] + 0.5) / (fy * tile) - y0 / tile).astype(np.int64) + _WINDOW
        bucket_x = np.floor((self.points[band, 1] + 0.5) / (fx * tile) - x0 / tile).astype(np.int64) + _WINDOW
        span_y, span_x = tiles_y + 2 * _WINDOW, tiles_x + 2 * _WINDOW
        inside = (bucket_y >= 0) & (bucket_y < span_y) & (bucket_x >= 0) & (bucket_x < span_x)
        bucket = bucket_y[inside] * span_x + bucket_x[inside]
        order = np.argsort(bucket, kind="stable")
        samples = band[inside][order]
        per_bucket = np.bincount(bucket, minlength=span_y * span_x)
        bucket_start = np.cumsum(per_bucket) - per_bucket
        offsets = np.arange(2 * _WINDOW + 1)
        window = (np.arange(tiles_y)[:, None, None, None] + offsets[:, None]) * span_x + (
            np.arange(tiles_x)[None, :, None, None] + offsets
        )  # tiles_y × tiles_x × side × side bucket numbers
        count, start = per_bucket[window].ravel(), bucket_start[window].ravel()
        first = np.cumsum(count) - count
        pairs = int(count.sum())
        candidate = samples[np.arange(pairs) - np.repeat(first - start, count)]
        tile_of = np.repeat(np.arange(tiles_y * tiles_x), count.reshape(tiles_y * tiles_x, -1).sum(axis=1))
        return candidate, tile_of

    def _tree_candidates(
        self, rows: np.ndarray, cols: np.ndarray, centres: np.ndarray, tile: int, reach: float
    ) -> list[_Group]:
        """The tiles at ``rows``, ``cols`` (centres in level-0 ``(y, x)``) with their candidates from the k-d tree."""
        n = self.num_samples
        groups, todo, k = [], np.arange(len(rows)), min(_FIRST_K, n)
        bound = None
        while len(todo):
            dist, idx = self.tree().query(centres[todo], k=k)
            dist, idx = dist.reshape(len(todo), k), idx.reshape(len(todo), k)
            if bound is None:  # first pass, every tile: its centre's nearest sample gives the bound
                bound = dist[:, 0] + reach + 1e-6 * (1 + dist[:, 0])
            complete = (dist[:, -1] > bound[todo]) | (k == n)
            done = todo[complete]
            candidates = np.where(dist[complete] <= bound[done, None], idx[complete], n)
            groups.append(_Group(tile, rows[done], cols[done], candidates))
            todo, k = todo[~complete], min(2 * k, n)
        return groups

    def _refine(
        self, out: np.ndarray, groups: list[_Group], local_y: np.ndarray, local_x: np.ndarray, fy: float, fx: float
    ) -> None:
        """Split blocks into quarters until each has one candidate, writing finished blocks into ``out``;
        small blocks with few candidates compare every pixel with every candidate. Groups of the same
        block size and width are merged before they are worked on (largest first), so each numpy call
        covers many blocks.

        A quarter keeps candidate ``j`` only if ``j`` is closer than the quarter centre's nearest
        candidate ``i`` at one of the quarter's corner pixels: ``d_i² − d_j²`` is linear in the pixel
        position, so that is where it is largest, and ``j`` can be nearest to no pixel of the quarter
        otherwise. Distances are measured in level-0 units: level-pixel offsets scaled by ``(fy, fx)``.
        """
        n = self.num_samples
        sy, sx = np.float32(fy * fy), np.float32(fx * fx)
        pending: dict[tuple[int, int], list[_Group]] = {}
        for part in groups:
            pending.setdefault((part.size, part.candidates.shape[1]), []).append(part)
        while pending:
            group = _merged(pending.pop(max(pending)))
            cand = group.candidates
            if group.size <= _DIRECT:
                self._assign_pixels(out, group, local_y, local_x, sy, sx)
                continue
            half = group.size // 2
            blocks = np.arange(len(cand))
            ly = local_y[cand] - group.rows[:, None].astype(np.float32)  # blocks × K, from the block's first pixel
            lx = local_x[cand] - group.cols[:, None].astype(np.float32)
            # squared level-0 distances along one axis to the quarters' centres and edge pixels
            centre_y, edge_y = _squared_offsets(ly, half, sy)
            centre_x, edge_x = _squared_offsets(lx, half, sx)
            reach2 = np.float32(((half - 1) / 2) ** 2 * (sy + sx))  # a quarter's half-diagonal², level-0 units
            keep = np.empty((len(cand), 4, cand.shape[1]), dtype=bool)
            nearest = np.empty((len(cand), 4), dtype=np.intp)
            for quarter, (t, left) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                at_centre = centre_y[t] + centre_x[left]
                i = at_centre.argmin(axis=1)
                nearest[:, quarter] = i
                # max over the quarter's corners of d_i² − d_j², separably over its two edge rows and columns
                gain_y = np.maximum(edge_y[2 * t][blocks, i][:, None] - edge_y[2 * t],
                                    edge_y[2 * t + 1][blocks, i][:, None] - edge_y[2 * t + 1])
                gain_x = np.maximum(edge_x[2 * left][blocks, i][:, None] - edge_x[2 * left],
                                    edge_x[2 * left + 1][blocks, i][:, None] - edge_x[2 * left + 1])
                tolerance = np.float32(4e-5) * (at_centre[blocks, i] + 4 * reach2)  # float32 rounding, kept generous
                np.greater_equal(gain_y + gain_x, -tolerance[:, None], out=keep[:, quarter])
            keep = keep.reshape(-1, cand.shape[1])  # (4·blocks)×K, quarters in raster order
            parent = np.repeat(blocks, 4)
            quarter = np.tile(np.arange(4), len(cand))
            rows = group.rows[parent] + (quarter >> 1) * half
            cols = group.cols[parent] + (quarter & 1) * half
            count = np.count_nonzero(keep, axis=1)
            single = np.flatnonzero(count == 1)
            if len(single):
                best = cand[parent[single], nearest.reshape(-1)[single]]
                view = out.reshape(out.shape[0] // half, half, out.shape[1] // half, half)
                view[rows[single] // half, :, cols[single] // half, :] = best[:, None, None]
            several = np.flatnonzero(count > 1)
            block, k = np.nonzero(keep[several])
            for part in _compact(half, rows[several], cols[several], block, cand[parent[several[block]], k],
                                 count[several], n):
                pending.setdefault((half, part.candidates.shape[1]), []).append(part)

    @staticmethod
    def _assign_pixels(
        out: np.ndarray, group: _Group, local_y: np.ndarray, local_x: np.ndarray, sy: np.float32, sx: np.float32
    ) -> None:
        """Every pixel of each block gets its nearest candidate (squared distances are separable in y and
        x): one comparison for two candidates, a running minimum for more, in batches that stay in the cache."""
        size, width = group.size, group.candidates.shape[1]
        offsets = np.arange(size, dtype=np.float32)
        blocks = out.reshape(out.shape[0] // size, size, out.shape[1] // size, size)
        step = max(1, _DIRECT_BATCH // (size * size))
        for start in range(0, len(group.rows), step):
            cand = group.candidates[start : start + step].T  # K × blocks
            rows = group.rows[start : start + step].astype(np.float32)[:, None] + offsets  # blocks × size
            cols = group.cols[start : start + step].astype(np.float32)[:, None] + offsets
            dy = local_y[cand][:, :, None] - rows  # K × blocks × size
            dx = local_x[cand][:, :, None] - cols
            dy *= dy
            dy *= sy
            dx *= dx
            dx *= sx
            if width == 2:  # the second is nearer where dy₀ − dy₁ > dx₁ − dx₀: one comparison per pixel
                second = np.greater((dy[0] - dy[1])[:, :, None], (dx[1] - dx[0])[:, None, :])
                nearest = np.where(second, cand[1][:, None, None], cand[0][:, None, None])
            else:
                nearest = _running_nearest(dy, dx, cand)
            blocks[group.rows[start : start + step] // size, :, group.cols[start : start + step] // size, :] = nearest


class ReverseFilledLevel:
    """Array-like view ``(H_l, W_l)`` or ``(C, H_l, W_l)`` of one pyramid level of the reverse-filled map.

    Nothing is computed until it is indexed; indexing with slices fills just that region. With
    ``cache_tiles`` > 0 the region is widened to whole ``tile × tile`` tiles and the last
    ``cache_tiles`` tiles are kept (a viewer that pans or refreshes asks for them again); only the
    missing tiles' bounding box is filled. :meth:`fill_all` computes and keeps the whole level (for
    small, coarse levels). Safe to index from several threads.
    """

    def __init__(self, sampler: ReverseSampler, shape: tuple[int, int], downsample: Factors, *,
                 cache_tiles: int = 0, tile: int = 256) -> None:
        self.sampler = sampler
        self.level_shape = (int(shape[0]), int(shape[1]))
        self.downsample = _factors(downsample)
        channels = sampler.channels
        self.shape = self.level_shape if channels is None else (channels, *self.level_shape)
        self.dtype = sampler.values.dtype
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)
        self.cache_tiles, self.tile = int(cache_tiles), int(tile)
        self._tiles: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._whole: np.ndarray | None = None
        self._lock = threading.Lock()
        self.filled_pixels = 0  # level pixels computed so far (cache misses)

    def fill_all(self) -> ReverseFilledLevel:
        """Compute the whole level now and keep it (later reads are slices of it)."""
        if self._whole is None:
            whole = self.sampler.fill(slice(0, self.level_shape[0]), slice(0, self.level_shape[1]), self.downsample)
            self.filled_pixels += self.level_shape[0] * self.level_shape[1]
            self._whole = whole
        return self

    def _region(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if self._whole is not None:
            return self._whole[..., r0:r1, c0:c1]
        if self.cache_tiles <= 0 or r1 <= r0 or c1 <= c0:
            self.filled_pixels += (r1 - r0) * (c1 - c0)
            return self.sampler.fill(slice(r0, r1), slice(c0, c1), self.downsample)
        t = self.tile
        rows, cols = range(r0 // t, -(-r1 // t)), range(c0 // t, -(-c1 // t))
        with self._lock:
            have = {key: self._tiles[key] for key in ((i, j) for i in rows for j in cols) if key in self._tiles}
            for key in have:
                self._tiles.move_to_end(key)
        missing = [(i, j) for i in rows for j in cols if (i, j) not in have]
        if missing:
            i0, i1 = min(i for i, _ in missing), max(i for i, _ in missing) + 1
            j0, j1 = min(j for _, j in missing), max(j for _, j in missing) + 1
            y0, y1 = i0 * t, min(i1 * t, self.level_shape[0])
            x0, x1 = j0 * t, min(j1 * t, self.level_shape[1])
            block = self.sampler.fill(slice(y0, y1), slice(x0, x1), self.downsample)
            self.filled_pixels += (y1 - y0) * (x1 - x0)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    have[(i, j)] = block[..., i * t - y0 : (i + 1) * t - y0, j * t - x0 : (j + 1) * t - x0]
            with self._lock:
                for key in missing:
                    self._tiles[key] = have[key]
                while len(self._tiles) > self.cache_tiles:
                    self._tiles.popitem(last=False)
        out = np.empty((*self.shape[:-2], r1 - r0, c1 - c0), dtype=self.dtype)
        for (i, j), piece in have.items():
            ty, tx = i * t, j * t
            ys, ye = max(ty, r0), min(ty + piece.shape[-2], r1)
            xs, xe = max(tx, c0), min(tx + piece.shape[-1], c1)
            if ys < ye and xs < xe:
                out[..., ys - r0 : ye - r0, xs - c0 : xe - c0] = piece[..., ys - ty : ye - ty, xs - tx : xe - tx]
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        spatial = key[-2:]
        bounds, steps, squeeze = [], [], []
        for axis, k in enumerate(spatial):
            length = self.level_shape[axis]
            if isinstance(k, (int, np.integer)):
                i = int(k) + length if k < 0 else int(k)
                if not 0 <= i < length:
                    raise IndexError(f"index {k} out of range for axis of length {length}")
                bounds.append((i, i + 1))
                steps.append(1)
                squeeze.append(axis)
            elif isinstance(k, slice):
                start, stop, step = k.indices(length)
                if step < 0:
                    raise IndexError("negative steps are not supported")
                stop = max(start, stop)
                bounds.append((start, stop))
                steps.append(step)
            else:
                raise IndexError(f"unsupported index {k!r}")
        (r0, r1), (c0, c1) = bounds
        region = self._region(r0, r1, c0, c1)
        region = region[..., :: steps[0], :: steps[1]]
        if squeeze:
            region = region[(Ellipsis, *(0 if a in squeeze else slice(None) for a in (0, 1)))]
        return region[key[:-2]] if len(key) > 2 else region

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        full = self[...]
        return full.astype(dtype) if dtype is not None else full


def reverse_filled_pyramid(
    sampler: ReverseSampler, level_shapes: Sequence[tuple[int, int]], downsamples: Sequence[Factors], chunks: int = 512
) -> list:
    """Lazy dask arrays, one per level, of the reverse-filled map (chunks of ``chunks`` pixels per side)."""
    import dask.array as da

    if len(level_shapes) != len(downsamples):
        raise ValueError("one downsample factor per level shape is needed")
    levels = []
    for i, (shape, factor) in enumerate(zip(level_shapes, downsamples)):
        level = ReverseFilledLevel(sampler, shape, factor)
        chunk_shape = (chunks, chunks) if level.ndim == 2 else (level.shape[0], chunks, chunks)
        levels.append(
            da.from_array(
                level, chunks=chunk_shape, asarray=False, fancy=False, name=f"reverse-fill-{id(sampler):x}-{i}",
                meta=np.empty((0,) * level.ndim, dtype=level.dtype),
            )
        )
    return levels


def nearest_pixel_samples(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``G(Y)``: the class map ``labels`` ``(H, W)`` read at the nearest pixel of each ``(y, x)`` in ``points``."""
    rows = np.clip(np.rint(points[..., 0]), 0, labels.shape[0] - 1).astype(np.intp)
    cols = np.clip(np.rint(points[..., 1]), 0, labels.shape[1] - 1).astype(np.intp)
    return labels[rows, cols]


def intrinsic_iou(labels: np.ndarray, points: np.ndarray, num_classes: int) -> np.ndarray:
    """Intrinsic upsampling error: per-class ``IoU(Π(G⁻¹(G(Y))), Y)`` for ``c = 0 … num_classes − 1``.

    ``labels``: ``(H, W)`` class map ``Y``; ``points``: sampling locations ``(…, 2)`` in its pixels
    ``(y, x)``. The labels are sampled at the nearest pixel (as ``sample_labels``), put back by the
    reverse sampler, and compared with ``Y``. A class absent from both maps gets NaN.
    """
    labels = np.asarray(labels)
    restored = ReverseSampler(points, nearest_pixel_samples(labels, points)).fill(
        slice(0, labels.shape[0]), slice(0, labels.shape[1])
    )
    ious = np.full(num_classes, np.nan)
    for c in range(num_classes):
        truth, pred = labels == c, restored == c
        union = np.count_nonzero(truth | pred)
        if union:
            ious[c] = np.count_nonzero(truth & pred) / union
    return ious
