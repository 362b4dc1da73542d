"""Saving a lesion Labels layer into its image's workspace: on request, every minute, and on close.

A save snapshots the layer in the GUI thread (a copy, so painting can go on) and writes it in a
worker thread; the write is atomic, so a crash during a save leaves the previous save intact.
Autosave writes only when the layer was edited since the last save. Unsaved edits are also saved
when the layer stops being tracked (another layer chosen, the layer deleted, the viewer closed, which
removes every layer), when the window holding the widget closes, and when the application quits:
synchronously where the layer or the window goes away.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QCoreApplication, QEvent, QObject, QTimer

from napari_m2mrf.io.fundus_results import save_fundus_labels, workspace_location
from napari_m2mrf.widgets.result_layers import PREDICTION_KEY, PROBABILITY

AUTOSAVE_INTERVAL_MS = 60_000


@dataclass
class SaveSnapshot:
    """Everything one save writes, copied out of the layers."""

    workspace: Path
    corrected: np.ndarray
    prediction: np.ndarray | None
    image: np.ndarray | None
    source: str | None
    idrid_folder: Path | None
    name: str
    image_name: str | None = None
    probabilities: np.ndarray | None = None
    ground_truth: np.ndarray | None = None


def snapshot(viewer: Any, layer: Any, idrid_folder: Path | None = None) -> SaveSnapshot:
    """Copy ``layer`` (and the image it belongs to, while it is still open) for saving.

    The workspace is the one the image was reopened from (``metadata["workspace"]``), else the one
    beside the image's file (or in the user cache). The image's probability layers go along when
    they changed since they were last saved there, its ground-truth layer (``<image> ground truth``)
    when there is one.
    """
    source_name = layer.metadata.get("m2mrf", {}).get("source")
    image_layer = viewer.layers[source_name] if source_name and source_name in viewer.layers else None
    owner_name = source_name or layer.name
    owner = image_layer if image_layer is not None else layer
    source_path = owner.metadata.get("source") or owner.source.path
    reopened = owner.metadata.get("workspace")
    workspace = Path(reopened) if reopened else workspace_location(owner_name, source_path)
    image = None
    if image_layer is not None and not image_layer.multiscale:
        image = np.asarray(image_layer.data)
    corrected = np.array(layer.data, dtype=np.uint8, copy=True)
    return SaveSnapshot(
        workspace=workspace,
        corrected=corrected,
        prediction=layer.metadata.get(PREDICTION_KEY),
        image=image,
        source=source_path,
        idrid_folder=idrid_folder,
        name=Path(source_path).stem if source_path else owner_name,
        image_name=owner_name,
        probabilities=_unsaved_probabilities(viewer, owner_name, workspace, corrected.shape),
        ground_truth=_ground_truth(viewer, owner_name, corrected.shape),
    )


def _unsaved_probabilities(viewer: Any, source: str, workspace: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The image's per-class probability maps ``(K, Y, X)`` float16 when one of them is not saved in
    ``workspace`` yet (each is then marked saved there); None when there are none or all are saved."""
    from napari_m2mrf.classes import FUNDUS_CLASSES

    by_code = {}
    for candidate in viewer.layers:
        tag = candidate.metadata.get("m2mrf", {})
        if tag.get("role") == PROBABILITY and tag.get("source") == source and not candidate.multiscale:
            by_code[tag.get("code")] = candidate
    found = [by_code.get(cls.code) for cls in FUNDUS_CLASSES]
    if not found or any(p is None or tuple(p.data.shape) != tuple(shape) for p in found):
        return None
    if all(p.metadata["m2mrf"].get("saved_to") == str(workspace) for p in found):
        return None
    maps = np.stack([np.asarray(p.data, dtype=np.float16) for p in found])
    for p in found:
        p.metadata["m2mrf"]["saved_to"] = str(workspace)
    return maps


def _ground_truth(viewer: Any, source: str, shape: tuple[int, ...]) -> np.ndarray | None:
    name = f"{source} ground truth"
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    if getattr(layer, "multiscale", True) or tuple(layer.data.shape) != tuple(shape):
        return None
    return np.array(layer.data, dtype=np.uint8, copy=True)


def write_snapshot(snap: SaveSnapshot) -> list[Path]:
    """Write a snapshot: the workspace labels, and IDRiD masks when a folder was chosen."""
    save_fundus_labels(
        snap.workspace, snap.corrected, snap.prediction, snap.image, snap.source, image_name=snap.image_name,
        probabilities=snap.probabilities, ground_truth=snap.ground_truth,
    )
    written = [snap.workspace]
    if snap.idrid_folder is not None:
        from napari_m2mrf.io.writers import write_idrid_masks

        written += write_idrid_masks(snap.corrected, snap.idrid_folder, snap.name)
    return written


class LayerSaver(QObject):
    """Tracks edits of one Labels layer and saves it on demand, on a timer and when it goes away: the
    layer leaves the viewer, the window ``owner`` (the widget, a QWidget) is shown in closes, the
    application quits."""

    def __init__(self, viewer: Any, notify, owner: QObject | None = None,
                 interval_ms: int = AUTOSAVE_INTERVAL_MS) -> None:
        super().__init__()
        self._viewer = viewer
        self._notify = notify
        self.layer = None
        self.dirty = False
        self.last_saved: list[Path] = []
        self.worker = None
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.autosave)
        self.timer.start()
        self._owner, self._top_level = owner, lambda: None
        if owner is not None:
            owner.installEventFilter(self)
        QCoreApplication.instance().aboutToQuit.connect(self._save_now)
        viewer.layers.events.removed.connect(self._on_layer_removed)  # also as the viewer closes

    def track(self, layer: Any) -> None:
        """Watch ``layer`` for edits (paint, fill, erase and programmatic edits with history); unsaved
        edits of the layer tracked until now are saved first (at once when it left the viewer)."""
        if layer is self.layer:
            return
        if self.layer is not None:
            if self.dirty:
                self.save(wait=self.layer not in self._viewer.layers)
            self.layer.events.paint.disconnect(self._mark_dirty)
            self.layer.events.data.disconnect(self._mark_dirty)
        self.layer, self.dirty = layer, False
        if layer is not None:
            layer.events.paint.connect(self._mark_dirty)
            layer.events.data.connect(self._mark_dirty)

    def _mark_dirty(self, event=None) -> None:
        self.dirty = True

    def save(self, idrid_folder: Path | None = None, wait: bool = False) -> None:
        """Save the tracked layer; in a worker thread unless ``wait``."""
        from superqt.utils import create_worker

        if self.layer is None:
            return
        snap = snapshot(self._viewer, self.layer, idrid_folder)
        self.dirty = False
        if wait:
            self._saved(write_snapshot(snap))
            return
        self.worker = create_worker(
            write_snapshot, snap, _connect={"returned": self._saved, "errored": self._failed}
        )

    def autosave(self) -> None:
        if self.dirty and (self.worker is None or not self.worker.is_running):
            self.save()

    def _saved(self, paths: list[Path]) -> None:
        self.last_saved = paths
        self._notify(f"saved to {paths[0]}" + (f" and {len(paths) - 1} IDRiD masks" if len(paths) > 1 else ""))

    def _failed(self, exc: Exception) -> None:
        self.dirty = True
        self._notify(f"save failed, edits kept in the viewer: {exc}")

    def _on_layer_removed(self, event) -> None:
        if event.value is self.layer:
            self._save_now()

    def _save_now(self) -> None:
        if self.dirty and self.layer is not None:
            self.save(wait=True)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        """Once the owner is shown, watch the window it is shown in (napari's main window when docked);
        when that window closes, save unsaved edits before it goes away."""
        if watched is self._owner and event.type() == QEvent.Type.Show:
            window = self._owner.window()
            if window is not self._owner and window is not self._top_level():
                window.installEventFilter(self)
                self._top_level = weakref.ref(window)  # the window's lifetime is not the saver's business
        elif event.type() == QEvent.Type.Close and watched is self._top_level():
            self._save_now()
        return False
