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
from napari_m2mrf.io.workspace import PHOTOGRAPH, Workspace, workspace_path_for

CORRECTED = "corrected"
PREDICTION = "prediction"
GROUND_TRUTH = "ground_truth"


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
    *,
    image_name: str | None = None,
    probabilities: np.ndarray | None = None,
    ground_truth: np.ndarray | None = None,
) -> Workspace:
    """Write ``corrected`` (Y, X) uint8, and ``prediction`` and ``image`` (Y, X, 3) when given, to the
    workspace at ``workspace_path`` (created for ``source`` if missing).

    ``probabilities``: the run's per-class maps ``(K, Y, X)`` (0..1), stored at full resolution
    (float16) so that a reopened workspace scores exactly as before; ``ground_truth`` ``(Y, X)`` is
    stored once as ``labels/ground_truth`` (an existing one is kept). The workspace records that it
    was made from a photograph and the image's layer name ``image_name``, so it reopens as the same
    single-scale, editable layers.
    """
    path = Path(workspace_path)
    workspace = Workspace.open(path) if path.exists() else Workspace.create(path, source=source)
    if image is not None and not workspace.has_image:
        workspace.write_image(np.moveaxis(np.asarray(image)[..., :3], -1, 0))
    workspace.record_made_from(PHOTOGRAPH, image_name)
    colors, names = fundus_label_style()
    workspace.write_labels(CORRECTED, corrected, colors=colors, names=names)
    if prediction is not None:
        workspace.write_labels(PREDICTION, prediction, colors=colors, names=names)
    if ground_truth is not None and GROUND_TRUTH not in workspace.label_names():
        workspace.write_labels(GROUND_TRUTH, ground_truth, colors=colors, names=names)
    if probabilities is not None:
        codes = [cls.code for cls in FUNDUS_CLASSES[: len(probabilities)]]
        workspace.write_probabilities(np.asarray(probabilities), downsample=1.0, class_names=codes)
    if provenance:
        workspace.record_provenance(**provenance)
    return workspace
