"""Safe defaults on a real viewer: Correct edits the prediction, never ground truth unless the user says
Yes in a real question box; the Segment widget offers trained models only and the CLI refuses a bare
architecture; napari opens plain photographs with its own reader and workspaces with ours, without
asking, while "Open with Plugin" still reaches ours for any photograph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QApplication, QMessageBox

from napari_m2mrf._samples import fundus_labels_layer
from napari_m2mrf.widgets.correct import CorrectWidget

pytestmark = pytest.mark.gui


def _truth_then_prediction(viewer):
    labels = np.zeros((60, 80), np.uint8)
    labels[10:20, 10:20] = 1
    data, kwargs, _ = fundus_labels_layer(labels.copy(), "eye ground truth")
    truth = viewer.add_labels(data, **kwargs)  # first in the list
    data, kwargs, _ = fundus_labels_layer(labels.copy(), "lesions")
    kwargs["metadata"] = {"m2mrf": {"role": "lesions", "source": "eye", "code": None}}
    prediction = viewer.add_labels(data, **kwargs)
    return truth, prediction


def _answer_next_question(qtbot, button: QMessageBox.StandardButton, seen: list[str]) -> None:
    """Click ``button`` of the next modal question box once it shows (a real click on a real box)."""

    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        seen.append(box.text())
        qtbot.mouseClick(box.button(button), Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, click)


def test_correct_picks_the_prediction_and_asks_before_editing_ground_truth(
    make_napari_viewer, qtbot, private_cache: Path
) -> None:
    viewer = make_napari_viewer()
    truth, prediction = _truth_then_prediction(viewer)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer.value is prediction, "the prediction, even though the ground truth comes first"

    seen: list[str] = []
    _answer_next_question(qtbot, QMessageBox.StandardButton.No, seen)
    widget.layer.value = truth
    assert seen and "ground truth" in seen[0]
    assert widget.layer.value is prediction, "No keeps the prediction"
    widget.remove_small()  # acts on the prediction
    assert truth.data[10:20, 10:20].all()

    _answer_next_question(qtbot, QMessageBox.StandardButton.Yes, seen)
    widget.layer.value = truth
    assert len(seen) == 2 and widget.layer.value is truth
    widget.min_size.value = 1000
    widget.remove_small()
    assert not truth.data.any(), "after Yes the tools edit the ground truth"
    widget.layer.value = prediction
    widget.layer.value = truth  # agreed once: not asked again for this layer
    assert len(seen) == 2 and widget.layer.value is truth


def test_correct_leaves_a_lone_ground_truth_unselected(make_napari_viewer, private_cache: Path) -> None:
    viewer = make_napari_viewer()
    data, kwargs, _ = fundus_labels_layer(np.zeros((30, 40), np.uint8), "eye ground truth")
    viewer.add_labels(data, **kwargs)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer.value is None
    data, kwargs, _ = fundus_labels_layer(np.zeros((30, 40), np.uint8), "lesions")
    kwargs["metadata"] = {"m2mrf": {"role": "lesions", "source": "eye", "code": None}}
    prediction = viewer.add_labels(data, **kwargs)
    widget.reset_choices()
    assert widget.layer.value is prediction


def test_segment_offers_trained_models_only(make_napari_viewer) -> None:
    pytest.importorskip("napari_m2mrf.models.registry")
    from gui_timing import wait_until_ready

    from napari_m2mrf.models.registry import list_models
    from napari_m2mrf.widgets.segment import CHECKPOINT_FILE, SegmentWidget

    viewer = make_napari_viewer()
    widget = wait_until_ready(SegmentWidget(viewer))
    choices = list(widget.model.choices)
    assert "fundus_m2mrf_w18s" in choices and choices[-1] == CHECKPOINT_FILE
    assert not set(choices) & set(list_models()), choices


def test_cli_refuses_an_untrained_architecture(tmp_path: Path, capsys) -> None:
    pytest.importorskip("napari_m2mrf.models.registry")
    from PIL import Image

    from napari_m2mrf.cli import main

    image = tmp_path / "eye.png"
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(image)
    code = main(["predict", str(image), "--model", "hrnetv2_w18", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "hrnetv2_w18 is an untrained architecture; train it first with napari-m2mrf train" in err[0]
    assert not (tmp_path / "out").exists()


def test_napari_opens_photographs_itself_and_workspaces_with_the_plugin(make_napari_viewer, tmp_path: Path) -> None:
    from napari.errors import MultipleReaderError
    from PIL import Image

    from napari_m2mrf.io.fundus_results import save_fundus_labels
    from napari_m2mrf.widgets.reader_defaults import remember_reader_defaults

    photo = tmp_path / "cat.png"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(photo)
    workspace = tmp_path / "eye.m2mrf.zarr"
    labels = np.zeros((40, 50), np.uint8)
    labels[5:9, 5:9] = 2
    save_fundus_labels(workspace, labels, labels, np.full((40, 50, 3), 90, np.uint8), image_name="eye")

    viewer = make_napari_viewer()
    with pytest.raises(MultipleReaderError):  # napari's behaviour: two readers claim it, nobody chose
        viewer.open(str(photo), plugin=None)
    assert remember_reader_defaults()  # the plugin's first use in a session (a widget, a read)
    assert remember_reader_defaults() == {}, "added once; the user's preferences are never overwritten"

    (plain,) = viewer.open(str(photo), plugin=None)  # a drop of a plain photograph: napari's reader
    assert "source" not in plain.metadata and plain.source.reader_plugin == "napari"
    reopened = viewer.open(str(workspace), plugin=None)  # a drop of a workspace: ours, no dialog
    assert [layer.name for layer in reopened] == ["eye", "lesions"]
    assert reopened[1].source.reader_plugin == "napari-m2mrf" and not reopened[1].multiscale
    (chosen,) = viewer.open(str(photo), plugin="napari-m2mrf")  # File > Open with Plugin > napari-m2mrf
    assert chosen.metadata["source"] == str(photo) and chosen.data.shape == (40, 50, 3)


def test_a_preference_of_the_user_is_kept(make_napari_viewer, tmp_path: Path) -> None:
    from napari.settings import get_settings

    from napari_m2mrf.widgets.reader_defaults import remember_reader_defaults

    make_napari_viewer()
    get_settings().plugins.extension2reader = {"*.png": "napari-m2mrf"}
    added = remember_reader_defaults()
    assert "*.png" not in added and get_settings().plugins.extension2reader["*.png"] == "napari-m2mrf"
