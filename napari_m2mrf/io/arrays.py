"""Lazy array views that reorder axes without reading data (for napari and the samplers)."""

from __future__ import annotations

from typing import Any

import numpy as np


class LazyArray:
    """What napari, dask and numpy ask of a lazy array beyond ``shape``, ``dtype`` and
    ``__getitem__``: ``size``, ``len()`` and ``np.asarray`` (a read of the whole array)."""

    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]  # type: ignore[index]
        return data if dtype is None else data.astype(dtype)


class AxesView(LazyArray):
    """A read-only view of an array-like with named axes, presented in another axis order.

    ``source`` has axes ``source_axes`` (e.g. ``"YXS"`` from a TIFF); the view has axes
    ``target_axes`` (e.g. ``"CYX"``). Axes of the source not in the target must have length 1
    and are dropped; a target axis missing from the source (a grey image's ``C``) has length 1.
    Indexing with basic slices reads only the requested region from ``source``.
    """

    def __init__(self, source: Any, source_axes: str, target_axes: str) -> None:
        source_axes = source_axes.upper().replace("S", "C")
        target_axes = target_axes.upper()
        if len(source_axes) != len(source.shape):
            raise ValueError(f"axes {source_axes!r} do not match shape {tuple(source.shape)}")
        for axis, length in zip(source_axes, source.shape, strict=True):
            if axis not in target_axes and length != 1:
                raise ValueError(f"axis {axis!r} of length {length} has no place in {target_axes!r}")
        self.source = source
        self.source_axes = source_axes
        self.target_axes = target_axes
        self.dtype = np.dtype(source.dtype)
        self.shape = tuple(
            source.shape[source_axes.index(axis)] if axis in source_axes else 1 for axis in target_axes
        )
        self.ndim = len(self.shape)
        source_chunks = getattr(source, "chunks", source.shape)
        self.chunks = tuple(
            source_chunks[source_axes.index(axis)] if axis in source_axes else 1 for axis in target_axes
        )

    def __repr__(self) -> str:
        return f"AxesView({self.target_axes} {self.shape} {self.dtype} of {self.source_axes})"

    def __getitem__(self, key: Any) -> np.ndarray:
        by_axis = dict(zip(self.target_axes, _full_key(key, self.ndim), strict=True))
        source_key = tuple(by_axis.get(axis, 0) for axis in self.source_axes)
        data = np.asarray(self.source[source_key])
        data_axes = [axis for axis, k in zip(self.source_axes, source_key, strict=True) if not _is_scalar(k)]
        for axis in self.target_axes:
            if axis in self.source_axes:
                continue
            k = by_axis[axis]
            if _is_scalar(k):
                if k not in (0, -1):
                    raise IndexError(f"index {k} out of range for axis {axis!r} of length 1")
                continue
            data = data[..., np.newaxis][..., k]
            data_axes.append(axis)
        out_axes = [axis for axis in self.target_axes if not _is_scalar(by_axis[axis])]
        return np.transpose(data, [data_axes.index(axis) for axis in out_axes])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data.astype(dtype) if dtype is not None else data


def _is_scalar(key: Any) -> bool:
    return isinstance(key, (int, np.integer))


def _full_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """``key`` as a tuple of ``ndim`` ints or slices (an ``Ellipsis`` expanded)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices for a {ndim}-d view")
    key = key + (slice(None),) * (ndim - len(key))
    for k in key:
        if not isinstance(k, slice) and not _is_scalar(k):
            raise IndexError(f"only integers and slices index an axes view, not {type(k).__name__}")
    return key


class RegionArray(LazyArray):
    """A read-only ``(C, Y, X)`` array-like over a reader that returns rectangles (OpenSlide, wsidicom…).

    Subclasses set ``shape``, ``dtype`` and ``chunks`` (the file's tile size, so dask and the samplers
    read tile by tile) and implement :meth:`read`. Indexing with integers and slices (positive steps)
    reads the bounding rectangle of the key with one :meth:`read` call.
    """

    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, int, int]
    ndim = 3

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` as ``(Y, X, C)``; the rectangle is inside the array and not empty."""
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        channel, rows, cols = _full_key(key, 3)
        (y0, y1, ystep), (x0, x1, xstep) = (_bounds(k, n) for k, n in ((rows, self.shape[1]), (cols, self.shape[2])))
        if ystep < 0 or xstep < 0:
            raise IndexError("negative steps are not supported on a slide level")
        if y1 <= y0 or x1 <= x0:
            region = np.zeros((max(0, y1 - y0), max(0, x1 - x0), self.shape[0]), self.dtype)
        else:
            region = np.asarray(self.read(y0, y1, x0, x1))
        out = region[::ystep, ::xstep].transpose(2, 0, 1)[channel]
        if _is_scalar(rows):
            out = out[..., 0, :]
        if _is_scalar(cols):
            out = out[..., 0]
        return np.ascontiguousarray(out)


def _bounds(key: Any, length: int) -> tuple[int, int, int]:
    if isinstance(key, slice):
        return key.indices(length)
    index = int(key)
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for length {length}")
    index %= length
    return index, index + 1, 1
