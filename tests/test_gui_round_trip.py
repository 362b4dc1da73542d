"""A new user's first hour, twice over on a real viewer: open a photograph, segment it with the bundled
fundus model, correct the result with the Correct widget (brush, relabel and delete clicks), save,
close the viewer, reopen the workspace, check that it comes back as the same single-scale, editable
layers (corrections pixel for pixel), segment again (corrections kept), correct again, measure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QWidget

pytestmark = pytest.mark.gui
pytest.importorskip("napari_m2mrf.models.registry")

from gui_timing import wait_for_segment_run, wait_until_ready  # noqa: E402

from napari_m2mrf.classes import FUNDUS_CLASSES  # noqa: E402
from napari_m2mrf.io.workspace import PHOTOGRAPH, Workspace  # noqa: E402
from napari_m2mrf.label_tools import component_at  # noqa: E402
from napari_m2mrf.widgets.correct import CLICK_DELETE, CLICK_NONE, CLICK_RELABEL, CorrectWidget  # noqa: E402
from napari_m2mrf.widgets.metrics_widget import MetricsWidget  # noqa: E402
from napari_m2mrf.widgets.segment import REGION_TILES, SegmentWidget  # noqa: E402
from napari_m2mrf.widgets.view import world_to_canvas  # noqa: E402

MODEL = "fundus_m2mrf_w18s"


def canvas_widget(viewer) -> QWidget:
    """The viewer's vispy canvas, found in the main window by its Qt class (no private napari API)."""
    docked = next(iter(viewer.window.dock_widgets.values()))
    main = getattr(docked, "native", docked).window()
    found = [w for w in main.findChildren(QWidget) if "CanvasBackend" in type(w).__name__]
    assert len(found) == 1, [type(w).__name__ for w in found]
    return found[0]


def click(viewer, qtbot, row: float, col: float) -> None:
    """A real left click on the canvas over data pixel (row, col) of an unscaled layer."""
    y, x = (int(round(float(v))) for v in world_to_canvas(viewer, row, col))
    qtbot.mouseClick(canvas_widget(viewer), Qt.MouseButton.LeftButton, pos=QPoint(x, y))


def dock(viewer, widget):
    viewer.window.add_dock_widget(widget, name=type(widget).__name__)
    return widget


def segment(viewer, qtbot) -> None:
    widget = dock(viewer, wait_until_ready(SegmentWidget(viewer)))
    assert MODEL in widget.model.choices
    widget.image.value = viewer.layers["eye"]
    widget.model.value = MODEL
    widget.device.value = "cpu"
    widget.region.value = REGION_TILES
    widget.tile.value = 384
    widget.run()
    wait_for_segment_run(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value


def correct(viewer, qtbot, round_: int) -> np.ndarray:
    """Paint a blob with the brush, relabel it by a click, delete a predicted component by a click, save;
    returns the corrected labels as saved."""
    lesions = viewer.layers["lesions"]
    widget = dock(viewer, CorrectWidget(viewer))
    assert widget.layer.value is lesions, "Correct edits the prediction by default, not the ground truth"
    viewer.reset_view()
    qtbot.wait(50)
    row, col = 120 + 60 * round_, 150
    lesions.selected_label = 1
    lesions.brush_size = 9
    lesions.paint((row, col), 1, refresh=True)  # napari's brush
    assert lesions.data[row, col] == 1
    widget.lesion_class.value = 3
    widget.click_action.value = CLICK_RELABEL
    click(viewer, qtbot, row, col)
    qtbot.waitUntil(lambda: lesions.data[row, col] == 3, timeout=5000)
    target = _inside_largest_predicted_lesion(lesions.data, lesions.metadata["prediction"])
    assert target is not None, "the bundled model finds lesions in the sample"
    if target is not None:  # delete a lesion the model found, by a click well inside it
        size = component_at(lesions.data, target)[0].size
        widget.click_action.value = CLICK_DELETE
        click(viewer, qtbot, *target)
        qtbot.waitUntil(lambda: lesions.data[target] == 0, timeout=5000)
        assert "deleted" in widget.status.value and str(size) in widget.status.value
    widget.click_action.value = CLICK_NONE
    widget.save_button.clicked.emit()
    with qtbot.waitSignal(widget.saver.worker.finished, timeout=60_000):
        pass
    assert not widget.saver.dirty
    return np.array(lesions.data, copy=True)


def _inside_largest_predicted_lesion(labels: np.ndarray, prediction: np.ndarray) -> tuple[int, int] | None:
    from scipy import ndimage

    components, count = ndimage.label((labels > 0) & (labels == prediction))
    if not count:
        return None
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(components), components, range(1, count + 1))))
    depth = ndimage.distance_transform_edt(components == largest)
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(depth)), depth.shape))


def measure(viewer, qtbot) -> dict:
    widget = dock(viewer, MetricsWidget(viewer))
    widget.reset_choices()
    widget.prediction.value = "probabilities of eye"
    widget.ground_truth.value = "eye ground truth"
    widget.compute()
    with qtbot.waitSignal(widget.worker.finished, timeout=60_000):
        pass
    assert widget.table.item(0, 0) is not None and widget.status.value.startswith("mAUPR")
    return widget.last_metrics


def check_reopened(viewer, corrected: np.ndarray, probabilities: dict, colours: dict, workspace: Path) -> None:
    names = [layer.name for layer in viewer.layers]
    assert names == ["eye", "eye ground truth", *(f"{c.code} probability" for c in FUNDUS_CLASSES), "lesions"], names
    image = viewer.layers["eye"]
    assert type(image).__name__ == "Image" and not image.multiscale and image.rgb and image.data.shape[2] == 3
    assert "m2mrf" not in image.metadata and image.metadata["workspace"] == str(workspace)
    lesions = viewer.layers["lesions"]
    assert type(lesions).__name__ == "Labels" and not lesions.multiscale and lesions.editable
    np.testing.assert_array_equal(lesions.data, corrected)  # corrections, pixel for pixel
    assert lesions.metadata["m2mrf"] == {"role": "lesions", "source": "eye", "code": None}
    assert lesions.metadata["prediction"].shape == corrected.shape
    assert list(lesions.features["class"]) == ["background", "EX", "HE", "SE", "MA"]
    assert {v: tuple(np.round(lesions.colormap.map(v), 3).ravel()) for v in range(1, 5)} == colours
    truth = viewer.layers["eye ground truth"]
    assert type(truth).__name__ == "Labels" and not truth.multiscale
    for cls in FUNDUS_CLASSES:
        layer = viewer.layers[f"{cls.code} probability"]
        assert not layer.visible and not layer.multiscale
        assert layer.metadata["m2mrf"]["role"] == "probability" and layer.metadata["m2mrf"]["source"] == "eye"
        np.testing.assert_allclose(layer.data, probabilities[cls.code], atol=1e-3)


@pytest.mark.timeout(900)
def test_open_segment_correct_save_reopen_twice(make_napari_viewer, qtbot, private_cache: Path, tmp_path: Path) -> None:
    from PIL import Image

    from sample_data.fundus_samples import fundus_lesions

    sample = fundus_lesions(index=0, scale=0.5)
    photograph = tmp_path / "eye.png"
    Image.fromarray(sample.image).save(photograph)
    workspace = tmp_path / "eye.m2mrf.zarr"

    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(photograph), plugin="napari-m2mrf")  # a plain photograph: the user's choice
    viewer.add_labels(sample.labels, name="eye ground truth")  # above the image, before any prediction
    for round_ in range(2):
        segment(viewer, qtbot)
        lesions = viewer.layers["lesions"]
        if round_:  # the corrections made before saving survive a new run on the reopened image
            edited = corrected != lesions.metadata["prediction"]
            assert edited.any()
            np.testing.assert_array_equal(lesions.data[edited], corrected[edited])
        corrected = correct(viewer, qtbot, round_)
        saved = Workspace.open(workspace, mode="r")
        assert saved.made_from == PHOTOGRAPH and saved.image_name == "eye"
        np.testing.assert_array_equal(np.asarray(saved.labels("corrected").levels[0]), corrected)
        probabilities = {c.code: np.array(viewer.layers[f"{c.code} probability"].data) for c in FUNDUS_CLASSES}
        colours = {v: tuple(np.round(lesions.colormap.map(v), 3).ravel()) for v in range(1, 5)}
        metrics = measure(viewer, qtbot)
        viewer.close()

        viewer = make_napari_viewer(show=True)
        if round_ == 0:
            viewer.open(str(workspace), plugin="napari-m2mrf")  # File > Open with Plugin
        else:
            viewer.open(str(workspace), plugin=None)  # a drop: napari picks the reader, no dialog
        check_reopened(viewer, corrected, probabilities, colours, workspace)
        again = measure(viewer, qtbot)
        assert again["mean"]["iou"] == pytest.approx(metrics["mean"]["iou"], abs=1e-3)
