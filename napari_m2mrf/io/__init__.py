"""Images and slides in and out: readers, the workspace store, writers, conversion.

Nothing here imports Qt or napari. Images in memory are channel-last ``(Y, X, C)`` uint8;
on disk images are stored in OME-NGFF order ``(C, Y, X)`` and labels as ``(Y, X)`` uint8.

Public names (imported on first use through ``lazy_loader.attach``, the scientific-Python standard
for lazy package attributes, so ``import napari_m2mrf.io`` stays light):

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

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "workspace": ["Workspace", "workspace_path_for"],
        "pyramid": ["Pyramid", "LabelPyramid"],
        "formats": ["inspect_source", "SourceInfo"],
        "photographs": ["read_image"],
        "slides": ["open_pyramid", "ensure_pyramid", "open_label_pyramids"],
        "datasets": ["find_ground_truth", "load_ground_truth", "list_dataset"],
        "writers": ["write_idrid_masks", "write_points_csv", "read_points_csv"],
        "idrid_masks": ["read_idrid_mask", "write_idrid_mask"],
    },
)
