"""Images and slides in and out: readers, the workspace store, writers, conversion.

Nothing here imports Qt or napari. Images in memory are channel-last ``(Y, X, C)`` uint8;
on disk images are stored in OME-NGFF order ``(C, Y, X)`` and labels as ``(Y, X)`` uint8.

Public names (imported on first use, so ``import napari_m2mrf.io`` stays light):

* :class:`Workspace` — the ``<name>.m2mrf.zarr`` store of an image and its results;
* :class:`Pyramid`, :class:`LabelPyramid` — lazy multiresolution images and label maps;
* :func:`inspect_source` — format, size and fundus/slide kind of a path, from its content;
* :func:`read_image` — a photograph as ``(Y, X, 3)`` uint8;
* :func:`open_pyramid`, :func:`ensure_pyramid`, :func:`open_label_pyramids` — slides;
* :func:`find_ground_truth`, :func:`load_ground_truth`, :func:`list_dataset` — dataset layouts;
* :func:`write_idrid_masks`, :func:`write_points_csv`, :func:`read_points_csv` — writers;
* :func:`read_idrid_mask`, :func:`write_idrid_mask` — IDRiD's 1-bit mask files.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Workspace": "workspace",
    "workspace_path_for": "workspace",
    "Pyramid": "pyramid",
    "LabelPyramid": "pyramid",
    "inspect_source": "formats",
    "SourceInfo": "formats",
    "read_image": "fundus",
    "open_pyramid": "slides",
    "ensure_pyramid": "slides",
    "open_label_pyramids": "slides",
    "find_ground_truth": "datasets",
    "load_ground_truth": "datasets",
    "list_dataset": "datasets",
    "write_idrid_masks": "writers",
    "write_points_csv": "writers",
    "read_points_csv": "writers",
    "read_idrid_mask": "idrid_masks",
    "write_idrid_mask": "idrid_masks",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
