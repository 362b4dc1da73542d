"""A window that fits: at 1280×800 the docked Segment, Train and Correct widgets leave the canvas at least
half the window, long status lines wrap instead of widening the dock, the Train widget fits a 1000 px
tall screen, every control has a tooltip, the metrics table and plot show their labels whole, and the
main actions have keyboard shortcuts."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QAbstractButton, QApplication, QWidget

pytestmark = pytest.mark.gui
pytest.importorskip("napari_m2mrf.models.registry")

from gui_timing import wait_until_ready  # noqa: E402


def main_window(viewer) -> QWidget:
    docked = next(iter(viewer.window.dock_widgets.values()))
    return getattr(docked, "native", docked).window()


def canvas_widget(viewer) -> QWidget:
    """The vispy canvas, found by its Qt class name (no private napari attribute)."""
    found = [w for w in main_window(viewer).findChildren(QWidget) if "CanvasBackend" in type(w).__name__]
    assert len(found) == 1, [type(w).__name__ for w in found]
    return found[0]


def canvas_share(viewer) -> tuple[float, float, tuple[int, int]]:
    """(canvas width / window width, canvas height / window height, window size)."""
    QApplication.processEvents()
    window, canvas = main_window(viewer), canvas_widget(viewer)
    return canvas.width() / window.width(), canvas.height() / window.height(), (window.width(), window.height())


def _docked(make_napari_viewer, qtbot):
    from napari_m2mrf.widgets.correct import CorrectWidget
    from napari_m2mrf.widgets.segment import SegmentWidget
    from napari_m2mrf.widgets.train_widget import TrainWidget

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="eye", rgb=True)
    widgets = {}
    for cls in (SegmentWidget, TrainWidget, CorrectWidget):
        widget = cls(viewer)
        viewer.window.add_dock_widget(widget, name=cls.__name__)
        widgets[cls.__name__] = widget
    wait_until_ready(widgets["SegmentWidget"])
    viewer.window.resize(1280, 800)
    qtbot.wait(200)
    return viewer, widgets


def test_three_docks_leave_half_the_window_to_the_canvas(make_napari_viewer, qtbot) -> None:
    viewer, widgets = _docked(make_napari_viewer, qtbot)
    width_share, height_share, size = canvas_share(viewer)
    print(f"canvas share at 1280x800 with Segment, Train, Correct docked: width {width_share:.1%}, "
          f"height {height_share:.1%}, window {size}")
    assert size[0] <= 1280 + 1 and size[1] <= 800 + 1, f"the docks forced the window to grow to {size}"
    assert width_share >= 0.5 and height_share >= 0.5

    long_line = "done in 12.3 s; " + "showing 262144 sampling dots at level 3 of the slide pyramid " * 4
    widgets["SegmentWidget"].status.value = long_line  # what a slide run writes
    qtbot.wait(100)
    width_after, _, size_after = canvas_share(viewer)
    assert width_after >= 0.5 and size_after[0] <= 1281, (width_after, size_after)
    assert width_after == pytest.approx(width_share, abs=0.02), "a long status line must wrap, not widen the dock"


def test_train_widget_fits_a_1000_px_screen(make_napari_viewer) -> None:
    from napari_m2mrf.widgets.train_widget import TrainWidget

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    height = widget.native.minimumSizeHint().height()
    print(f"Train widget minimum height {height} px, preferred {widget.native.sizeHint().height()} px")
    assert widget.native.sizeHint().height() <= 900 and height <= 900


def _controls(widget) -> list[QWidget]:
    """Every magicgui control and Qt button of a plugin widget (labels and plots excluded)."""
    from magicgui.widgets import Label, ProgressBar

    found = [w.native for w in widget if not isinstance(w, (Label, ProgressBar))]
    found += [b for b in widget.native.findChildren(QAbstractButton) if b not in found]
    return found


@pytest.mark.parametrize("name", ["SegmentWidget", "CorrectWidget", "TrainWidget", "MetricsWidget", "SlideEditWidget"])
def test_every_control_has_a_tooltip(make_napari_viewer, name: str) -> None:
    from importlib import import_module

    module = {"SegmentWidget": "segment", "CorrectWidget": "correct", "TrainWidget": "train_widget",
              "MetricsWidget": "metrics_widget", "SlideEditWidget": "slide_edit"}[name]
    viewer = make_napari_viewer()
    widget = getattr(import_module(f"napari_m2mrf.widgets.{module}"), name)(viewer)
    def tip(control: QWidget) -> str:  # Qt shows the nearest ancestor's tooltip over a child without one
        while control is not None and control is not widget.native:
            if control.toolTip().strip():
                return control.toolTip()
            control = control.parentWidget()
        return ""

    missing = [
        f"{type(control).__name__} {getattr(control, 'text', lambda: '')()}"
        for control in _controls(widget)
        if not tip(control)
    ]
    assert not missing, f"{name}: controls without a tooltip: {missing}"


def test_metrics_headers_and_axis_labels_are_whole(make_napari_viewer, qtbot) -> None:
    from qtpy.QtGui import QFontMetrics

    from napari_m2mrf.widgets.metrics_widget import MetricsWidget

    viewer = make_napari_viewer(show=True)
    widget = MetricsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.window.resize(1280, 800)
    qtbot.wait(200)
    table = widget.table
    header = table.horizontalHeader()
    metrics = QFontMetrics(header.font())
    for column in range(table.columnCount()):
        text = table.horizontalHeaderItem(column).text()
        needed = max(metrics.horizontalAdvance(line) for line in text.split("\n"))
        assert header.sectionSize(column) >= needed, f"header {text!r} is cut: {header.sectionSize(column)} < {needed}"
    plot = widget.plot
    assert plot.axis_label_rects()["y"].height() >= QFontMetrics(plot.font()).horizontalAdvance(plot.y_label)
    assert plot.axis_label_rects()["y"].left() >= 0


def test_shortcuts_trigger_the_main_actions(make_napari_viewer, qtbot, private_cache) -> None:
    from qtpy.QtGui import QKeySequence

    from napari_m2mrf.widgets.correct import CorrectWidget
    from napari_m2mrf.widgets.segment import SegmentWidget
    from napari_m2mrf.widgets.shortcuts import SHORTCUTS

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="eye", rgb=True)
    labels = np.zeros((64, 64), np.uint8)
    labels[5:9, 5:9] = 1
    lesions = viewer.add_labels(labels, name="lesions", metadata={"m2mrf": {"role": "lesions", "source": "eye", "code": None}})
    segment = wait_until_ready(SegmentWidget(viewer))
    viewer.window.add_dock_widget(segment, name="Segment")
    segment.model.value = "fundus_m2mrf_w18s"
    segment.device.value = "cpu"
    correct = CorrectWidget(viewer)
    viewer.window.add_dock_widget(correct, name="Correct")
    window = main_window(viewer)
    window.activateWindow()
    canvas = canvas_widget(viewer)
    canvas.setFocus()
    qtbot.wait(50)

    def press(action: str) -> None:
        combo = QKeySequence(SHORTCUTS[action])[0]
        qtbot.keyClick(canvas, combo.key(), combo.keyboardModifiers())  # a key pressed over the canvas
        qtbot.wait(20)

    press("segment_run")
    assert segment.worker is not None and segment.cancel_button.enabled, "Alt+R started a run"
    segment.cancel()
    qtbot.waitUntil(lambda: segment.run_button.enabled, timeout=120_000)

    correct.lesion_class.value = 1
    press("next_class")
    assert correct.lesion_class.value == 2 and lesions.selected_label == 2
    press("previous_class")
    press("previous_class")
    assert correct.lesion_class.value == 4, "wraps around"

    lesions.data_setitem((np.array([30]), np.array([30])), 3)
    press("correct_save")
    assert correct.saver.worker is not None
    with qtbot.waitSignal(correct.saver.worker.finished, timeout=60_000):
        pass
    assert (private_cache / "workspaces" / "eye.m2mrf.zarr").is_dir()
