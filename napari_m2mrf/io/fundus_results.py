"""Saving the lesion results of one fundus image into its workspace.

``labels/corrected`` holds what the user made of the prediction (the ``lesions`` layer),
``labels/prediction`` the model's unedited output; the image itself is stored once so that
OME-Zarr tools can show the labels over it. Each pyramid is swapped in atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.cache import cache_dir
from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.io.workspace import Workspace, workspace_path_for

CORRECTED = "corrected"
PREDICTION = "prediction"


def fundus_label_style() -> tuple[dict[int, tuple[float, ...]], dict[int, str]]:
    """Colours and names of the fundus lesion labels, for the workspace's image-label metadata."""
    colors = {cls.label: cls.color for cls in FUNDUS_CLASSES}
    names = {cls.label: cls.code for cls in FUNDUS_CLASSES}
    return colors, names


def workspace_location(image_name: str, source_path: str | os.PathLike[str] | None) -> Path:
    """Where an image's workspace lives: beside its file, or in the user cache for an in-memory image."""
    if source_path:
        return workspace_path_for(source_path)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_name) or "image"
    return cache_dir("workspaces") / f"{safe}.m2mrf.zarr"


def save_fundus_labels(
    workspace_path: str | os.PathLike[str],
    corrected: np.ndarray,
    prediction: np.ndarray | None = None,
    image: np.ndarray | None = None,
    source: str | os.PathLike[str] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Workspace:
    """Write ``corrected`` (Y, X) uint8, and ``prediction`` and ``image`` (Y, X, 3) when given, to the
    workspace at ``workspace_path`` (created for ``source`` if missing)."""
    path = Path(workspace_path)
    workspace = Workspace.open(path) if path.exists() else Workspace.create(path, source=source)
    if image is not None and not workspace.has_image:
        workspace.write_image(np.moveaxis(np.asarray(image)[..., :3], -1, 0))
    colors, names = fundus_label_style()
    workspace.write_labels(CORRECTED, corrected, colors=colors, names=names)
    if prediction is not None:
        workspace.write_labels(PREDICTION, prediction, colors=colors, names=names)
    if provenance:
        workspace.record_provenance(**provenance)
    return workspace
