"""The Correct widget on a real viewer: real mouse clicks on the canvas delete or relabel components,
small components go in one undoable edit, the class picker drives napari's brush."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_m2mrf._samples import fundus_labels_layer
from napari_m2mrf.widgets.view import world_to_canvas
from napari_m2mrf.widgets.correct import CLICK_DELETE, CLICK_RELABEL, CorrectWidget

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_cache")]  # autosave writes to a test cache


def _labels() -> np.ndarray:
    labels = np.zeros((200, 300), np.uint8)
    labels[40:80, 50:90] = 1
    labels[120:150, 200:240] = 2
    labels[10, 10] = 4
    labels[190:192, 290:292] = 4
    return labels


def _setup(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = fundus_labels_layer(_labels(), "lesions")
    layer = viewer.add_labels(data, **kwargs)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    viewer.reset_view()
    return viewer, layer, widget


def _click(viewer, qtbot, row: float, col: float) -> None:
    """A real left click on the canvas over data pixel (row, col) of an unscaled layer."""
    canvas = viewer.window._qt_viewer.canvas.native
    y, x = (int(round(float(v))) for v in world_to_canvas(viewer, row, col))
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(x, y))


def test_click_deletes_the_component_under_the_cursor_and_undo_restores_it(make_napari_viewer, qtbot) -> None:
    viewer, layer, widget = _setup(make_napari_viewer)
    widget.click_action.value = CLICK_DELETE
    _click(viewer, qtbot, 60, 70)
    qtbot.waitUntil(lambda: layer.data[60, 70] == 0, timeout=5000)
    assert (layer.data[40:80, 50:90] == 0).all()
    assert (layer.data[120:150, 200:240] == 2).all(), "other components stay"
    widget.undo_button.clicked.emit()
    np.testing.assert_array_equal(layer.data, _labels())


def test_click_relabels_the_component_to_the_picked_class(make_napari_viewer, qtbot) -> None:
    viewer, layer, widget = _setup(make_napari_viewer)
    widget.lesion_class.value = 3
    assert layer.selected_label == 3
    widget.click_action.value = CLICK_RELABEL
    _click(viewer, qtbot, 135, 220)
    qtbot.waitUntil(lambda: layer.data[135, 220] == 3, timeout=5000)
    assert (layer.data[120:150, 200:240] == 3).all()
    assert (layer.data[40:80, 50:90] == 1).all()


def test_remove_small_components_in_one_undoable_step(make_napari_viewer) -> None:
    viewer, layer, widget = _setup(make_napari_viewer)
    widget.min_size.value = 5
    widget.remove_small_button.clicked.emit()
    assert layer.data[10, 10] == 0 and (layer.data[190:192, 290:292] == 0).all()
    assert (layer.data[40:80, 50:90] == 1).all()
    widget.undo_button.clicked.emit()
    np.testing.assert_array_equal(layer.data, _labels())
