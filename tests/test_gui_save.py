"""Saving corrections on a real viewer: Save writes the workspace (and IDRiD masks on request),
autosave catches unsaved edits, closing the viewer saves them, and reopening finds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_m2mrf.classes import label_colormap, lesion_features
from napari_m2mrf.io.idrid_masks import read_idrid_mask
from napari_m2mrf.io.workspace import Workspace
from napari_m2mrf.widgets.correct import CorrectWidget

pytestmark = pytest.mark.gui


def _image_and_lesions(viewer):
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), name="eye", rgb=True)
    prediction = np.zeros((96, 128), np.uint8)
    prediction[10:20, 10:30] = 1
    lesions = viewer.add_labels(
        prediction.copy(),
        name="lesions",
        colormap=label_colormap(),
        features=lesion_features(),
        metadata={"m2mrf": {"role": "lesions", "source": "eye", "code": None}, "prediction": prediction},
    )
    return image, lesions


def _paint_correction(lesions) -> None:
    lesions.selected_label = 2
    lesions.brush_size = 6
    lesions.paint((50, 60), 2, refresh=True)


def test_save_writes_corrections_and_prediction_and_reopens(make_napari_viewer, qtbot, private_cache: Path) -> None:
    viewer = make_napari_viewer()
    _, lesions = _image_and_lesions(viewer)
    widget = CorrectWidget(viewer)
    widget.layer.value = lesions
    _paint_correction(lesions)
    assert widget.saver.dirty
    widget.save_button.clicked.emit()
    with qtbot.waitSignal(widget.saver.worker.finished, timeout=30_000):
        pass
    path = private_cache / "workspaces" / "eye.m2mrf.zarr"
    assert widget.saver.last_saved == [path] and not widget.saver.dirty
    workspace = Workspace.open(path, mode="r")
    np.testing.assert_array_equal(np.asarray(workspace.labels("corrected").levels[0]), lesions.data)
    assert np.asarray(workspace.labels("prediction").levels[0])[50, 60] == 0
    assert workspace.has_image

    reopened = viewer.open(str(path), plugin="napari-m2mrf")  # a photograph's workspace: the same layers again
    corrected = next(layer for layer in reopened if layer.name.startswith("lesions"))  # "lesions [1]" beside the first
    assert not corrected.multiscale and corrected.editable
    assert corrected.data[50, 60] == 2 and corrected.data[15, 15] == 1
    assert corrected.metadata["prediction"][50, 60] == 0


def test_idrid_masks_are_written_on_request(make_napari_viewer, qtbot, private_cache: Path, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    _, lesions = _image_and_lesions(viewer)
    widget = CorrectWidget(viewer)
    widget.layer.value = lesions
    _paint_correction(lesions)
    widget.write_idrid.value = True
    widget.idrid_folder.value = tmp_path
    widget.save()
    with qtbot.waitSignal(widget.saver.worker.finished, timeout=30_000):
        pass
    assert read_idrid_mask(tmp_path / "eye_HE.tif")[50, 60]
    assert read_idrid_mask(tmp_path / "eye_EX.tif")[15, 15]
    assert not read_idrid_mask(tmp_path / "eye_MA.tif").any()


def test_autosave_writes_unsaved_edits_on_its_timer(make_napari_viewer, qtbot, private_cache: Path) -> None:
    viewer = make_napari_viewer()
    _, lesions = _image_and_lesions(viewer)
    widget = CorrectWidget(viewer)
    widget.layer.value = lesions
    assert widget.saver.timer.interval() <= 60_000
    widget.saver.timer.setInterval(100)
    qtbot.wait(300)
    assert widget.saver.last_saved == [], "nothing is saved while nothing was edited"
    _paint_correction(lesions)
    qtbot.waitUntil(lambda: bool(widget.saver.last_saved), timeout=30_000)
    saved = Workspace.open(widget.saver.last_saved[0], mode="r").labels("corrected").levels[0]
    assert np.asarray(saved)[50, 60] == 2


def test_closing_the_window_saves_unsaved_edits(make_napari_viewer, qtbot, private_cache: Path) -> None:
    """The window goes away without the layers being removed (its close button, or ``window.close()``)."""
    viewer = make_napari_viewer(show=True)
    _, lesions = _image_and_lesions(viewer)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(widget.native.isVisible)
    widget.layer.value = lesions
    _paint_correction(lesions)
    viewer.window.close()
    assert len(viewer.layers) == 2, "the layers are still there: the window's closing saved the edits"
    saved = Workspace.open(private_cache / "workspaces" / "eye.m2mrf.zarr", mode="r").labels("corrected").levels[0]
    assert np.asarray(saved)[50, 60] == 2
    assert not widget.saver.dirty


def test_deleting_the_layer_saves_its_unsaved_edits(make_napari_viewer, private_cache: Path) -> None:
    viewer = make_napari_viewer()
    _, lesions = _image_and_lesions(viewer)
    widget = CorrectWidget(viewer)
    widget.layer.value = lesions
    _paint_correction(lesions)
    viewer.layers.remove(lesions)
    saved = Workspace.open(private_cache / "workspaces" / "eye.m2mrf.zarr", mode="r").labels("corrected").levels[0]
    assert np.asarray(saved)[50, 60] == 2


def test_closing_the_viewer_saves_unsaved_edits(qtbot, private_cache: Path) -> None:
    import napari

    viewer = napari.Viewer(show=False)
    _, lesions = _image_and_lesions(viewer)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = lesions
    _paint_correction(lesions)
    viewer.close()
    saved = Workspace.open(private_cache / "workspaces" / "eye.m2mrf.zarr", mode="r").labels("corrected").levels[0]
    assert np.asarray(saved)[50, 60] == 2
