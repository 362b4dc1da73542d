"""Arrays whose chunks are made the first time they are read, then kept in their zarr store.

A source that is a pure function of position (the synthetic sample slide) need not be written whole
before it is shown. Its OME-Zarr store is created with metadata only; each level is a
:class:`MadeOnRead` over the store's array: a read makes the chunks it touches that the store does not
hold yet (``make(region) -> ndarray``), writes them into the store (the next read, in this session or
a later one, decodes them instead) and returns the request read from the store. Two threads that need
the same chunk make it once.

Such a store is registered in this process under its path (:func:`register`);
:mod:`napari_m2mrf.io.slides` opens a registered path through its registration, so the napari reader
and the slide job read the same, made-on-read pixels. The store's ``m2mrf.complete`` stays false:
opened without its registration (another process) it shows the chunks made so far and the fill value
elsewhere.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.arrays import LazyArray
from napari_m2mrf.io.pyramid import LabelPyramid, Pyramid

logger = logging.getLogger(__name__)

LOCK_STRIPES = 64  # chunk locks (a chunk uses the stripe of its index's hash)

Region = tuple[slice, ...]


class MadeOnRead(LazyArray):
    """A zarr ``array`` (local store) whose absent chunks are made by ``make(region)`` when first read.

    ``region``: one slice per axis, a whole chunk (clipped at the array's edge); ``make`` returns the
    chunk's values (shape of the region, the array's dtype). Indexing takes integers, slices and
    ``...``; the result is a numpy array, as from the zarr array.
    """

    def __init__(self, array: Any, make: Callable[[Region], np.ndarray], name: str) -> None:
        self.array, self.make, self.name = array, make, name
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in array.chunks)
        self._made: set[tuple[int, ...]] = set()
        self._made_lock = threading.Lock()
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        root = getattr(array.store, "root", None)
        self._folder = Path(root) / array.path if root is not None else None

    def __repr__(self) -> str:
        return f"MadeOnRead({self.name} {self.shape} {self.dtype}, chunks {self.chunks})"

    def __getitem__(self, key: Any) -> np.ndarray:
        for index in self._chunks_under(key):
            self._ensure(index)
        return np.asarray(self.array[key])

    @property
    def chunks_made(self) -> int:
        """Chunks known to be in the store (made here, or found there on first read)."""
        return len(self._made)

    def _chunks_under(self, key: Any) -> list[tuple[int, ...]]:
        bounds = _bounds(key, self.shape)
        ranges = [range(start // c, -(-stop // c)) for (start, stop), c in zip(bounds, self.chunks, strict=True)]
        return list(itertools.product(*ranges))

    def _ensure(self, index: tuple[int, ...]) -> None:
        if index in self._made:
            return
        with self._locks[hash(index) % LOCK_STRIPES]:
            if index in self._made:
                return
            if not self._stored(index):
                region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape,
                                                                                   strict=True))
                values = self.make(region)
                try:
                    self.array[region] = values
                except OSError as exc:
                    raise UserError(f"{self.name}: cannot keep a made chunk in {self._folder} "
                                    f"({exc.strerror or exc}); set NAPARI_M2MRF_CACHE to a writable folder") from None
            with self._made_lock:
                self._made.add(index)

    def _stored(self, index: tuple[int, ...]) -> bool:
        if self._folder is None:
            return False
        return os.path.exists(self._folder / self.array.metadata.encode_chunk_key(index))


def _bounds(key: Any, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Per axis the ``[start, stop)`` range that ``key`` (integers, slices, ``...``, arrays) touches."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    bounds = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0:
                start, stop = stop + 1, start + 1
            bounds.append((start, max(start, stop)))
        elif np.ndim(k) == 0:
            i = int(k) + (n if int(k) < 0 else 0)
            bounds.append((i, i + 1))
        else:
            values = np.asarray(k) % n
            bounds.append((int(values.min()), int(values.max()) + 1) if values.size else (0, 0))
    return bounds


@dataclass(frozen=True)
class MadeOnReadSource:
    """A registered store: its image pyramid and label pyramids, with levels made on read."""

    pyramid: Pyramid
    labels: list[LabelPyramid]


_registered: dict[Path, MadeOnReadSource] = {}
_registry_lock = threading.Lock()


def register(path: str | os.PathLike[str], source: MadeOnReadSource) -> None:
    """Open the store at ``path`` as ``source`` from now on (in this process)."""
    with _registry_lock:
        _registered[Path(path).resolve()] = source


def registered(path: str | os.PathLike[str]) -> MadeOnReadSource | None:
    """The registration of the store at ``path``, or None."""
    with _registry_lock:
        return _registered.get(Path(path).resolve())
