"""Rectangular regions of an image to segment: whole image, the visible field of view, drawn shapes.

A box is (y0, x0, y1, x1) in pixel coordinates of the image, half-open, clipped to the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

Box = tuple[int, int, int, int]


def clip_box(box: Sequence[float], height: int, width: int) -> Box | None:
    """``box`` rounded outward to whole pixels and clipped to the image; None when nothing is left."""
    y0, x0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    y1, x1 = min(height, int(np.ceil(box[2]))), min(width, int(np.ceil(box[3])))
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def boxes_from_polygons(polygons: Iterable[np.ndarray], height: int, width: int) -> list[Box]:
    """Bounding boxes of (N, 2) (row, col) vertex arrays, clipped to the image (empty ones dropped)."""
    boxes = []
    for vertices in polygons:
        vertices = np.asarray(vertices)[:, -2:]
        box = clip_box((*vertices.min(axis=0), *(vertices.max(axis=0) + 1)), height, width)
        if box is not None:
            boxes.append(box)
    return boxes


def box_mask(boxes: Sequence[Box], height: int, width: int) -> np.ndarray:
    """(H, W) bool: True inside any of ``boxes``."""
    mask = np.zeros((height, width), bool)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask
