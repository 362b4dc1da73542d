"""Open file handles (a TIFF, an OpenSlide or wsidicom slide) handed on to a lazy pyramid.

A reader opens a handle, checks the file and builds a :class:`~napari_m2mrf.io.pyramid.Pyramid`
that keeps the handle alive for later reads; :func:`closed_on_error` closes the handle when that
building raises instead, so a refused file leaves nothing open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> object: ...


H = TypeVar("H", bound=Closable)


@contextmanager
def closed_on_error(handle: H) -> Iterator[H]:
    """Yield ``handle``; close it and re-raise when the block raises (anything, a cancel included).

    On a normal exit the handle stays open: the caller (or the pyramid it returned) owns it.
    """
    try:
        yield handle
    except BaseException:
        handle.close()
        raise
