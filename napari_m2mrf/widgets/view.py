"""What the canvas shows: the camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)
and the mapping between data pixels of an unscaled 2-D layer and canvas pixels."""

from __future__ import annotations

from typing import Any

import numpy as np


def camera(viewer: Any) -> Any:
    """The viewer's camera model on any supported napari version."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def canvas_corners_world(viewer: Any) -> tuple[np.ndarray, np.ndarray]:
    """World (row, col) of the canvas's top-left and bottom-right corners in a 2-D view."""
    cam = camera(viewer)
    height, width = viewer.canvas.size
    centre = np.asarray(cam.center[-2:], float)
    half = np.array([height, width], float) / (2.0 * cam.zoom)
    return centre - half, centre + half


def world_to_canvas(viewer: Any, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canvas pixel (y, x) in logical pixels of world points (rows, cols) in a 2-D view."""
    cam = camera(viewer)
    height, width = viewer.canvas.size
    centre_y, centre_x = cam.center[-2:]
    return (np.asarray(rows) - centre_y) * cam.zoom + height / 2, (np.asarray(cols) - centre_x) * cam.zoom + width / 2
