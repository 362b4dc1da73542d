"""The Lesion inventory widget on a real viewer: rows and counts from a Labels layer, sorting,
filters, a click on a row moves the camera to the lesion, next/previous, reject as an undoable
edit, live updates after painting, CSV export, probabilities from the Segment widget's layers, and
the event loop kept free while a fundus-sized mask is inventoried."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from gui_timing import event_loop_ticks
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_m2mrf._samples import fundus_labels_layer
from napari_m2mrf.widgets.inventory import (
    ALL_CLASSES,
    AREA_COLUMN,
    AREA_PX_COLUMN,
    CLASS_COLUMN,
    PROB_COLUMN,
    STATUS_COLUMN,
    InventoryWidget,
)
from napari_m2mrf.widgets.result_layers import LESIONS, PROBABILITY
from napari_m2mrf.widgets.view import camera

pytestmark = pytest.mark.gui


def _labels() -> np.ndarray:
    labels = np.zeros((200, 300), np.uint8)
    labels[40:80, 50:90] = 1  # EX 1600 px, centroid (59.5, 69.5)
    labels[120:150, 200:240] = 2  # HE 1200 px, centroid (134.5, 219.5)
    labels[160:170, 20:30] = 1  # EX 100 px, centroid (164.5, 24.5)
    labels[10, 10] = 4  # MA 1 px
    return labels


def _wait_idle(qtbot, widget: InventoryWidget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=20_000)


def _setup(make_napari_viewer, qtbot, labels=None, **layer_kwargs):
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = fundus_labels_layer(_labels() if labels is None else labels, "lesions")
    kwargs.update(layer_kwargs)
    layer = viewer.add_labels(data, **kwargs)
    widget = InventoryWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    _wait_idle(qtbot, widget)
    return viewer, layer, widget


def _column(widget: InventoryWidget, column: int) -> list[str]:
    model = widget.table.model()
    return [model.index(row, column).data() for row in range(model.rowCount())]


def test_rows_counts_sorting_and_filters(make_napari_viewer, qtbot) -> None:
    viewer, layer, widget = _setup(make_napari_viewer, qtbot)
    assert widget.table.model().rowCount() == 4
    assert widget.inventory.counts() == {"EX": 2, "HE": 1, "SE": 0, "MA": 1}
    counts = widget.counts_label.text()
    assert "EX 2" in counts and "HE 1" in counts and "SE 0" in counts and "MA 1" in counts
    assert sorted(_column(widget, AREA_PX_COLUMN), key=int) == ["1", "100", "1200", "1600"]
    ex_row = _column(widget, CLASS_COLUMN).index("EX")
    brush = widget.table.model().index(ex_row, CLASS_COLUMN).data(Qt.ItemDataRole.BackgroundRole)
    assert brush.color().getRgbF()[:3] == (1.0, 0.0, 0.0), "the class in its colour"
    assert set(_column(widget, AREA_COLUMN)) == {"–"} and set(_column(widget, PROB_COLUMN)) == {"–"}

    widget.table.sortByColumn(AREA_PX_COLUMN, Qt.SortOrder.DescendingOrder)  # as a click on the header does
    assert _column(widget, AREA_PX_COLUMN) == ["1600", "1200", "100", "1"], "numeric, not text, order"
    widget.table.sortByColumn(AREA_PX_COLUMN, Qt.SortOrder.AscendingOrder)
    assert _column(widget, AREA_PX_COLUMN) == ["1", "100", "1200", "1600"]

    widget.class_filter.value = "EX"
    assert _column(widget, CLASS_COLUMN) == ["EX", "EX"]
    assert _column(widget, AREA_PX_COLUMN) == ["100", "1600"], "the sort survives filtering"
    widget.min_area.value = 500
    assert _column(widget, AREA_PX_COLUMN) == ["1600"]
    widget.class_filter.value = ALL_CLASSES
    assert _column(widget, AREA_PX_COLUMN) == ["1200", "1600"]
    assert "2 shown" in widget.counts_label.text()


def test_a_click_on_a_row_centres_the_view_on_the_lesion_and_next_previous_walk_the_rows(make_napari_viewer, qtbot) -> None:
    viewer, layer, widget = _setup(make_napari_viewer, qtbot)
    widget.table.sortByColumn(AREA_PX_COLUMN, Qt.SortOrder.DescendingOrder)
    viewer.reset_view()
    zoom_before = camera(viewer).zoom
    row = _column(widget, CLASS_COLUMN).index("HE")
    rect = widget.table.visualRect(widget.table.model().index(row, AREA_PX_COLUMN))
    qtbot.mouseClick(widget.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: np.allclose(camera(viewer).center[-2:], (134.5, 219.5)), timeout=5000)
    assert camera(viewer).zoom > zoom_before, "zoomed in on a 30×40 px lesion"
    assert widget.current_lesion().code == "HE"

    widget.next_button.clicked.emit()  # the next row in the table's order: the 100 px EX
    assert np.allclose(camera(viewer).center[-2:], (164.5, 24.5))
    widget.next_button.clicked.emit()
    assert np.allclose(camera(viewer).center[-2:], (10.0, 10.0))
    widget.next_button.clicked.emit()  # wraps around to the first row
    assert np.allclose(camera(viewer).center[-2:], (59.5, 69.5))
    widget.previous_button.clicked.emit()
    assert np.allclose(camera(viewer).center[-2:], (10.0, 10.0))

    window = widget.native.window()  # shortcuts work in the active window, as for a user
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    widget.table.setFocus()  # keyboard review while the widget has focus
    qtbot.keyClick(widget.table, Qt.Key.Key_P)
    assert np.allclose(camera(viewer).center[-2:], (164.5, 24.5))
    qtbot.keyClick(widget.table, Qt.Key.Key_N)
    assert np.allclose(camera(viewer).center[-2:], (10.0, 10.0))


def test_accept_marks_reviewed_and_reject_deletes_with_undo(make_napari_viewer, qtbot, tmp_path) -> None:
    viewer, layer, widget = _setup(make_napari_viewer, qtbot)
    widget.table.sortByColumn(AREA_PX_COLUMN, Qt.SortOrder.DescendingOrder)
    widget.next_button.clicked.emit()  # the 1600 px EX
    widget.accept_button.clicked.emit()
    assert widget.current_lesion().code == "HE", "accept moves on"
    assert _column(widget, STATUS_COLUMN)[0] == "accepted"
    assert "1 accepted" in widget.counts_label.text()

    window = widget.native.window()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    widget.table.setFocus()
    qtbot.keyClick(widget.table, Qt.Key.Key_R)  # reject the HE
    assert (layer.data[120:150, 200:240] == 0).all()
    assert (layer.data[40:80, 50:90] == 1).all(), "other lesions stay"
    _wait_idle(qtbot, widget)
    assert widget.inventory.counts()["HE"] == 0 and widget.table.model().rowCount() == 3
    assert _column(widget, STATUS_COLUMN)[0] == "accepted", "the review survives the recomputation"

    layer.undo()
    np.testing.assert_array_equal(layer.data, _labels())
    qtbot.waitUntil(lambda: widget.inventory.counts()["HE"] == 1, timeout=20_000)
    assert widget.table.model().rowCount() == 4

    path = widget.export_csv(tmp_path / "inventory.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == ["EX", "EX", "HE", "MA"]
    assert [row["status"] for row in rows] == ["accepted", "pending", "pending", "pending"]
    assert [int(row["area_px"]) for row in rows] == [1600, 100, 1200, 1]


def test_painting_a_new_blob_updates_the_table(make_napari_viewer, qtbot) -> None:
    viewer, layer, widget = _setup(make_napari_viewer, qtbot)
    layer.selected_label = 3
    layer.paint((100, 150), 3)  # napari's brush API (a 5 px brush by default)
    qtbot.waitUntil(lambda: widget.inventory.counts()["SE"] == 1, timeout=20_000)
    assert widget.table.model().rowCount() == 5 and "SE 1" in widget.counts_label.text()
    layer.data = _labels()[:, ::-1].copy()  # a new mask (the Segment widget re-running) also updates it
    qtbot.waitUntil(lambda: widget.inventory.counts()["SE"] == 0, timeout=20_000)
    assert widget.table.model().rowCount() == 4


def test_mean_probability_from_the_segment_layers_and_physical_areas(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    labels = _labels()
    image = viewer.add_image(np.zeros((200, 300, 3), np.uint8), rgb=True, name="photo",
                             metadata={"pixel_size_um": 10.0})
    ex = np.zeros(labels.shape, np.float32)
    ex[labels == 1] = 0.9
    viewer.add_image(ex, name="EX probability", visible=False,
                     metadata={"m2mrf": {"role": PROBABILITY, "source": image.name, "code": "EX"}})
    data, kwargs, _ = fundus_labels_layer(labels, LESIONS)
    layer = viewer.add_labels(data, metadata={"m2mrf": {"role": LESIONS, "source": image.name, "code": None}},
                              **{k: v for k, v in kwargs.items() if k != "name"}, name=LESIONS)
    widget = InventoryWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    _wait_idle(qtbot, widget)
    means = {lesion.code: lesion.mean_probability for lesion in widget.inventory.lesions}
    assert means["EX"] == pytest.approx(0.9) and means["HE"] is None
    assert widget.table.model().headerData(AREA_COLUMN, Qt.Orientation.Horizontal) == "area (mm²)"
    assert "image layer metadata" in widget.status.value
    big = next(lesion for lesion in widget.inventory.lesions if lesion.area_px == 1600)
    assert widget.inventory.area(big) == pytest.approx(0.16)
    widget.pixel_size.value = 0.5  # entered by the user: microscopy units
    qtbot.waitUntil(lambda: widget.inventory.pixel_size.um == 0.5, timeout=20_000)
    assert widget.table.model().headerData(AREA_COLUMN, Qt.Orientation.Horizontal) == "area (µm²)"


def test_a_fundus_sized_mask_updates_without_blocking_the_event_loop(make_napari_viewer, qtbot) -> None:
    """4288×2848 with ~2000 lesions: the update after an edit (a copy of the labels, the inventory in a
    worker, one model reset of the table) keeps the event loop running. About 40-50 ms longest stall
    here (napari's own redraw of the edited layer included); the bound leaves room for a loaded machine."""
    rng = np.random.default_rng(0)
    labels = np.zeros((2848, 4288), np.uint8)
    for _ in range(2000):
        r, c, s = rng.integers(0, 2800), rng.integers(0, 4240), rng.integers(2, 40)
        labels[r:r + s, c:c + s] = rng.integers(1, 5)
    viewer, layer, widget = _setup(make_napari_viewer, qtbot, labels=labels)
    count = len(widget.inventory.lesions)
    assert widget.table.model().rowCount() == count > 1000
    done = widget.computations
    with event_loop_ticks() as ticks:
        layer.data_setitem((np.array([5]), np.array([5])), 3)  # one pixel: a new SE lesion
        qtbot.waitUntil(lambda: widget.computations > done and not widget.busy, timeout=30_000)
        qtbot.wait(50)
    assert widget.inventory.counts()["SE"] >= 1 and len(widget.inventory.lesions) == count + 1
    stall = float(np.diff(ticks).max())
    print(f"longest event-loop stall during a 4288x2848 inventory update: {stall * 1000:.0f} ms ({count} lesions)")
    assert stall < 0.5, f"event loop blocked for {stall * 1000:.0f} ms"


def test_edits_after_the_widget_is_closed_raise_nothing(make_napari_viewer, qtbot) -> None:
    viewer, layer, widget = _setup(make_napari_viewer, qtbot)
    viewer.window.remove_dock_widget(widget.native)
    widget.native.deleteLater()
    qtbot.wait(50)
    layer.data_setitem((np.array([1]), np.array([1])), 2)  # the layer's events still reach the widget's callbacks
    layer.undo()
    viewer.layers.remove(layer)
    qtbot.wait(400)
