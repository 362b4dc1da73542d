"""Editing operations on label images, as (indices, value) edits a napari Labels layer can apply with undo.

Every function returns the pixel indices to change (a tuple of index arrays, NumPy fancy-indexing
form) so the caller writes them with ``Labels.data_setitem`` and the edit lands in napari's undo
history. Connectivity 2 means 8-neighbourhood (a diagonal touch joins two pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Indices = tuple[np.ndarray, np.ndarray]
EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def component_at(labels: np.ndarray, point: Sequence[float], connectivity: int = 2) -> Indices | None:
    """Indices of the connected component of equal non-zero label under ``point`` (row, col); None on background."""
    from skimage.segmentation import flood

    row, col = (int(round(v)) for v in point[-2:])
    height, width = labels.shape
    if not (0 <= row < height and 0 <= col < width) or labels[row, col] == 0:
        return None
    mask = flood(np.asarray(labels), (row, col), connectivity=connectivity)
    return np.nonzero(mask)


def small_components(labels: np.ndarray, min_size: int, connectivity: int = 2) -> Indices:
    """Indices of every pixel in a component (per class) of fewer than ``min_size`` pixels."""
    labels = np.asarray(labels)
    structure = EIGHT_NEIGHBOURS if connectivity == 2 else ndimage.generate_binary_structure(2, 1)
    remove = np.zeros(labels.shape, bool)
    for value in np.unique(labels):
        if value == 0:
            continue
        components, count = ndimage.label(labels == value, structure=structure)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = sizes < min_size
        small[0] = False
        remove |= small[components]
    return np.nonzero(remove)
