"""The sample slide made on demand: shown at once, each chunk synthesised the first time it is read.

:func:`sample_slide_on_demand` creates the 32768² sample's OME-Zarr store in the user cache with its
metadata only (a few milliseconds) and registers it (:mod:`napari_m2mrf.io.made_on_read`), so napari,
the reader and the slide job open it like any OME-Zarr store while each 256² chunk of each level is
synthesised by :class:`~sample_data.slide_texture.TissueSynth` when something first reads it and kept
in the store for later reads and later sessions. Nothing waits for the whole slide (writing it all
takes minutes on two cores: :func:`~sample_data.slide_sample.sample_slide`).

Pixels, compared with the written sample (:func:`~sample_data.slide_sample.generate_slide`, same seed):

* level 0, image and labels: identical (the same 512² tiles);
* a coarser level ``k`` (``f = 2ᵏ`` level-0 pixels per side) is made from level 0 directly instead of
  from level ``k-1``: a pixel is the mean of ``s×s`` level-0 pixels spread evenly over its ``f×f``
  area, ``s = min(f, SUPERSAMPLES)`` — the exact area mean at level 1, a 4-sample estimate of it
  above (16 samples cost four times as much: 1 s more for the screenful napari shows first) — with pixels of bare glass (next to no tissue, no region) glass one by one; a label is the
  label of the level-0 pixel at the centre of its area (not the 2×2 mode of the level below). The
  mean absolute difference to the written sample's coarser levels is measured in
  ``tests/test_slide_sample.py``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from napari_m2mrf.io.atomic import created_once
from napari_m2mrf.io.made_on_read import MadeOnRead, MadeOnReadSource, Region, register, registered
from napari_m2mrf.io.omezarr import COMPLETE_KEY
from napari_m2mrf.io.pyramid_build import level_shapes
from napari_m2mrf.io.tiff import LABELS_SERIES_NAME
from napari_m2mrf.io.zarr_arrays import create_array
from sample_data.slide_sample import SAMPLE_SIZE, ZARR_CHUNK, _default_levels, write_slide_ngff_metadata
from sample_data.slide_texture import TILE, TissueSynth

logger = logging.getLogger(__name__)

ON_DEMAND_VERSION = 1  # bump when the pixels made here change: the cache folder's name holds it
SUPERSAMPLES = 2  # per side, level-0 pixels averaged into one pixel of a coarser level
TILES_KEPT = 16  # level-0 512² tiles kept in memory (a chunk is a quarter of one)


def sample_slide_on_demand(size: int = SAMPLE_SIZE, seed: int = 0) -> Path:
    """The path of the sample slide's OME-Zarr store in the cache, registered so its chunks are made on read."""
    from napari_m2mrf.cache import cache_dir

    store = cache_dir("slide") / f"on-demand-v{ON_DEMAND_VERSION}-{size}-seed{seed}" / "slide.ome.zarr"
    if registered(store) is not None:
        return store
    if not store.is_dir():
        _create_store(store, size)
    register(store, _made_on_read(store, _ChunkMaker(size, seed)))
    logger.info("%s: the sample slide, made on read (chunks made so far are kept there)", store)
    return store


def _create_store(store: Path, size: int) -> None:
    """The store with metadata and empty arrays, created aside and renamed into place."""
    import zarr

    with created_once(store.parent, made=store) as scratch:  # another process finishing first is fine
        levels = _default_levels(size)
        root = zarr.open_group(str(scratch / store.name), mode="w", zarr_format=3)
        for k, shape in enumerate(level_shapes((3, size, size), levels)):
            create_array(root, str(k), shape, np.uint8, ZARR_CHUNK, "cyx")
        labels_group = root.create_group("labels")
        truth = labels_group.create_group(LABELS_SERIES_NAME)
        for k, shape in enumerate(level_shapes((size, size), levels)):
            create_array(truth, str(k), shape, np.uint8, ZARR_CHUNK, "yx")
        write_slide_ngff_metadata(root, truth, labels_group, levels)
        for group in (root, truth):  # not complete: the chunks are made when read
            group.attrs.update({COMPLETE_KEY: {"complete": False, "made_on_read": True}})


def _made_on_read(store: Path, maker: _ChunkMaker) -> MadeOnReadSource:
    """The store's pyramids (metadata as any reader parses it) over its arrays opened for writing."""
    import zarr

    from napari_m2mrf.io.omezarr import open_ome_zarr, open_ome_zarr_labels

    root = zarr.open_group(str(store), mode="r+")
    pyramid = open_ome_zarr(store, check_chunks=False)
    pyramid.levels = [MadeOnRead(root[str(k)], lambda region, k=k: maker.image(k, region), f"{store} level {k}")
                      for k in range(len(pyramid.levels))]
    truth = open_ome_zarr_labels(store, LABELS_SERIES_NAME)
    truth.levels = [MadeOnRead(root[f"labels/{LABELS_SERIES_NAME}/{k}"], lambda region, k=k: maker.labels(k, region),
                               f"{store} labels level {k}") for k in range(len(truth.levels))]
    pyramid.keep_alive.append(root)
    return MadeOnReadSource(pyramid, [truth])


class _ChunkMaker:
    """Chunks of the image ``(3, h, w)`` and label ``(h, w)`` levels from the synthesiser (see the module
    docstring for what a coarser level's pixel is). The synthesiser (two seconds to build) is built when
    the first chunk is made: a slide whose chunks on screen are all kept from an earlier session needs none."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._synth: TissueSynth | None = None
        self._tiles: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._synth_lock = threading.Lock()

    @property
    def synth(self) -> TissueSynth:
        with self._synth_lock:
            if self._synth is None:
                self._synth = TissueSynth(self.size, self.seed)
            return self._synth

    def _tile(self, ty: int, tx: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if (ty, tx) in self._tiles:
                self._tiles.move_to_end((ty, tx))
                return self._tiles[ty, tx]
        made = self.synth.tile(ty, tx)
        with self._lock:
            self._tiles[ty, tx] = made
            while len(self._tiles) > TILES_KEPT:
                self._tiles.popitem(last=False)
        return made

    def _level0(self, rows: slice, cols: slice, part: int) -> np.ndarray:
        """A region of level 0 inside one 512² tile (chunks of 256 never cross tiles)."""
        ty, tx = rows.start // TILE, cols.start // TILE
        tile = self._tile(ty, tx)[part]
        return tile[rows.start - ty * TILE : rows.stop - ty * TILE, cols.start - tx * TILE : cols.stop - tx * TILE]

    def image(self, level: int, region: Region) -> np.ndarray:
        _, rows, cols = region
        if level == 0:
            return np.ascontiguousarray(self._level0(rows, cols, 0).transpose(2, 0, 1))
        factor = 2**level
        per_side = min(factor, SUPERSAMPLES)
        offsets = ((np.arange(per_side) + 0.5) * factor / per_side).astype(np.int64)
        ys = (np.arange(rows.start, rows.stop, dtype=np.int64)[:, None] * factor + offsets).ravel()
        xs = (np.arange(cols.start, cols.stop, dtype=np.int64)[:, None] * factor + offsets).ravel()
        samples = self.synth.render(ys, xs)[0].astype(np.uint16)  # one grid of every sample, ascending
        h, w = rows.stop - rows.start, cols.stop - cols.start
        total = samples.reshape(h, per_side, w, per_side, 3).sum(axis=(1, 3))
        count = per_side * per_side
        mean = ((total + count // 2) // count).astype(np.uint8)
        return np.ascontiguousarray(mean.transpose(2, 0, 1))

    def labels(self, level: int, region: Region) -> np.ndarray:
        rows, cols = region
        if level == 0:
            return np.ascontiguousarray(self._level0(rows, cols, 1))
        factor = 2**level
        ys = np.arange(rows.start, rows.stop, dtype=np.int64) * factor + factor // 2
        xs = np.arange(cols.start, cols.stop, dtype=np.int64) * factor + factor // 2
        return self.synth.labels_at(ys, xs)
