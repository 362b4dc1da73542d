"""The Edit region widget: correct a slide's label pyramid one region at a time.

napari cannot paint multiscale Labels. "Edit region" copies a region of a label pyramid (the
visible field of view, or the bounding box of the first shape in a Shapes layer) at level 0 into a
single-level Labels layer, ``edit region``, placed exactly over the slide, where napari's brush,
fill, eraser and undo work as usual. "Write back" stores that region into the workspace's
``labels/corrected`` — created from ``labels/prediction`` on first use — and refreshes the
coarser levels there (``Workspace.write_labels_region``), in a worker thread; the corrected
pyramid is then shown (fresh reads). ``labels/prediction`` is never changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Label, PushButton

from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.regions import Box, boxes_from_polygons, clip_box
from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.slide_layers import LABEL_PYRAMID, show_label_pyramid
from napari_m2mrf.widgets.view import canvas_corners_world

if TYPE_CHECKING:
    import napari

EDIT_REGION = "edit region"
REGION_VIEW = "visible field of view"
REGION_SHAPE = "first shape in a Shapes layer"
MAX_EDIT_PIXELS = 4096 * 4096
ORIGINAL_KEY = "original"  # metadata key: the region as it was read (to tell unsaved edits)


def region_from_view(viewer: Any, pyramid_layer: Any) -> Box | None:
    """Level-0 ``(y0, x0, y1, x1)`` of the part of ``pyramid_layer`` on the canvas, or None."""
    corners = np.array([pyramid_layer.world_to_data(c) for c in canvas_corners_world(viewer)])[:, -2:]
    height, width = pyramid_layer.level_shapes[0][-2:]
    return clip_box((*corners.min(axis=0), *corners.max(axis=0)), height, width)


def region_from_shapes(shapes: Any, pyramid_layer: Any) -> Box | None:
    """Level-0 bounding box of the first shape of ``shapes`` over ``pyramid_layer``, or None."""
    if shapes is None or len(shapes.data) == 0:
        raise UserError("draw a rectangle in a Shapes layer first")
    vertices = np.array([pyramid_layer.world_to_data(shapes.data_to_world(v)) for v in shapes.data[0]])
    height, width = pyramid_layer.level_shapes[0][-2:]
    boxes = boxes_from_polygons([vertices], height, width)
    return boxes[0] if boxes else None


def read_region(workspace: str, box: Box, pyramid_layer: Any = None) -> tuple[np.ndarray, str]:
    """Level-0 labels of ``box`` from ``labels/corrected`` if it exists, else the prediction: from the
    workspace, or, while a run's prediction is not saved yet (``pyramid_layer`` tagged ``saved: False``),
    from that layer's lazy level 0 (the same values the save writes)."""
    from napari_m2mrf.inference.slide import CORRECTED, PREDICTION
    from napari_m2mrf.io.workspace import Workspace

    store = Workspace.open(workspace, mode="r")
    y0, x0, y1, x1 = box
    if CORRECTED in store.label_names():
        return np.array(store.labels(CORRECTED).levels[0][y0:y1, x0:x1], dtype=np.uint8), CORRECTED
    tag = pyramid_layer.metadata.get("m2mrf", {}) if pyramid_layer is not None else {}
    if tag.get("saved") is False and tag.get("labels") == PREDICTION:
        return np.array(pyramid_layer.data[0][y0:y1, x0:x1], dtype=np.uint8), f"{PREDICTION} (not saved yet)"
    return np.array(store.labels(PREDICTION).levels[0][y0:y1, x0:x1], dtype=np.uint8), PREDICTION


def write_region(workspace: str, region: np.ndarray, y0: int, x0: int, run_id: str | None = None) -> str:
    """Store ``region`` at level-0 ``(y0, x0)`` in ``labels/corrected`` (copied from the prediction first
    if absent) with its coarser levels updated; returns the workspace path.

    Waits while the run ``run_id`` is still being saved (its lazy labels on screen), then holds the
    workspace's lock throughout. ``run_id``: the run whose prediction the region was read from; when ``labels/corrected``
    must be made from the prediction and the workspace holds another run's (that save was cancelled),
    ``UserError``.
    """
    from napari_m2mrf.inference.slide import CORRECTED, PREDICTION, wait_until_saved
    from napari_m2mrf.io.output_gate import output_lock
    from napari_m2mrf.io.workspace import Workspace

    if run_id:
        wait_until_saved(run_id)  # the region came from a run still being saved: let it publish first
    with output_lock(workspace):
        store = Workspace.open(workspace)
        if CORRECTED not in store.label_names():
            if run_id and store.provenance.get("run_id") != run_id:
                raise UserError("the prediction this region was copied from was not saved (its run was cancelled): "
                                "run the model again, then edit")
            prediction = store.labels(PREDICTION)
            store.write_labels(CORRECTED, prediction.levels[0], colors=prediction.colors, names=prediction.names)
        store.write_labels_region(CORRECTED, region, y0, x0)
    return workspace


def _is_label_pyramid(layer: Any) -> bool:
    return layer.metadata.get("m2mrf", {}).get("role") == LABEL_PYRAMID


class SlideEditWidget(PluginWidget):
    """Label pyramid, region choice, "Edit region" and "Write back"."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.pyramid = ComboBox(label="labels", choices=layer_choices(viewer, keep=_is_label_pyramid))
        self.region = ComboBox(label="region", choices=[REGION_VIEW, REGION_SHAPE])
        self.shapes = ComboBox(label="shapes", choices=layer_choices(viewer, "Shapes"), visible=False)
        self.edit_button = PushButton(text="Edit region")
        self.write_button = PushButton(text="Write back")
        self.status = Label(value="")
        super().__init__(
            viewer, [self.pyramid, self.region, self.shapes, self.edit_button, self.write_button, self.status]
        )
        self.set_tooltips({
            self.pyramid: "the label pyramid of a slide to correct",
            self.region: "edit the part of the slide in view, or the region of a shape",
            self.shapes: "the Shapes layer whose shape gives the region",
            self.edit_button: "open the region as a paintable Labels layer at full resolution",
            self.write_button: "write the edited region back into the workspace's label pyramid",
        })
        self.region.changed.connect(lambda value: setattr(self.shapes, "visible", value == REGION_SHAPE))
        self.edit_button.clicked.connect(self.edit)
        self.write_button.clicked.connect(self.write_back)
        self.worker = None

    @property
    def edit_layer(self) -> Any | None:
        """The current ``edit region`` Labels layer, if any."""
        for layer in self._viewer.layers:
            if layer.metadata.get("m2mrf", {}).get("role") == EDIT_REGION:
                return layer
        return None

    def _box(self, pyramid_layer: Any) -> Box:
        if self.region.value == REGION_VIEW:
            box = region_from_view(self._viewer, pyramid_layer)
        else:
            box = region_from_shapes(self.shapes.value, pyramid_layer)
        if box is None:
            raise UserError(f"the region does not overlap {pyramid_layer.name!r}")
        y0, x0, y1, x1 = box
        if (y1 - y0) * (x1 - x0) > MAX_EDIT_PIXELS:
            raise UserError(
                f"the region is {y1 - y0}×{x1 - x0} level-0 pixels; zoom in or draw a smaller rectangle "
                f"(at most {MAX_EDIT_PIXELS:,} pixels)"
            )
        return box

    def edit(self) -> None:
        """Copy the chosen region of the label pyramid into a paintable ``edit region`` layer."""
        pyramid_layer = self.pyramid.value
        if pyramid_layer is None:
            self._notify("run a slide model first: there is no label pyramid to edit")
            return
        current = self.edit_layer
        if current is not None and not np.array_equal(current.data, current.metadata[ORIGINAL_KEY]):
            self._notify("the current edit region has unsaved changes: write it back or delete its layer first")
            return
        tag = pyramid_layer.metadata["m2mrf"]
        try:
            box = self._box(pyramid_layer)
            region, read_from = read_region(tag["workspace"], box, pyramid_layer)
        except UserError as exc:
            self._notify(str(exc))
            return
        if current is not None:
            self._viewer.layers.remove(current)
        y0, x0, y1, x1 = box
        scale = np.asarray(pyramid_layer.scale[-2:], float)
        layer = self._viewer.add_labels(
            region,
            name=EDIT_REGION,
            colormap=pyramid_layer.colormap,
            scale=scale,
            translate=np.asarray(pyramid_layer.translate[-2:], float) + scale * (y0, x0),
            metadata={
                "m2mrf": {**tag, "role": EDIT_REGION, "origin": (y0, x0)},
                ORIGINAL_KEY: region.copy(),
            },
        )
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        self._notify(f"editing {y1 - y0}×{x1 - x0} px at ({y0}, {x0}) from labels/{read_from}")

    def write_back(self) -> None:
        """Write the edit region into ``labels/corrected`` in a worker thread, then show it."""
        from superqt.utils import create_worker

        layer = self.edit_layer
        if layer is None:
            self._notify("nothing to write back: press Edit region first")
            return
        tag = layer.metadata["m2mrf"]
        region = np.array(layer.data, dtype=np.uint8, copy=True)
        y0, x0 = tag["origin"]
        self.write_button.enabled = False
        self.status.value = "writing back…"
        self.worker = create_worker(
            write_region, tag["workspace"], region, y0, x0, tag.get("run_id"),
            _start_thread=False,
            _connect={
                "returned": lambda workspace: self._written(layer, region, workspace),
                "errored": lambda exc: self._notify(f"write back failed: {exc}"),
                "finished": lambda: setattr(self.write_button, "enabled", True),
            },
        )
        self.worker.start()

    def _written(self, layer: Any, region: np.ndarray, workspace: str) -> None:
        from napari_m2mrf.inference.slide import CORRECTED

        tag = layer.metadata["m2mrf"]
        layer.metadata[ORIGINAL_KEY] = region
        frame = self.pyramid.value if self.pyramid.value is not None else layer
        show_label_pyramid(self._viewer, frame, tag["source"], workspace, CORRECTED)
        y0, x0 = tag["origin"]
        self._notify(f"wrote {region.shape[0]}×{region.shape[1]} px at ({y0}, {x0}) into labels/{CORRECTED}")
