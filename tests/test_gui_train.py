"""The Train widget on a real viewer: training in a separate process with live plots, Stop keeping the
last checkpoint, the trained model offered by the Segment widget; and the human-in-the-loop cycle
segment → correct → add to training set → fine-tune → segment again, which raises the corrected
region's IoU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gui_timing import wait_for_segment_run, wait_until_ready

from napari_m2mrf._samples import fundus_labels_layer
from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.metrics import LesionMetrics
from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint
from napari_m2mrf.widgets.segment import REGION_WHOLE, SegmentWidget
from napari_m2mrf.widgets.train_widget import TrainWidget
from sample_data.fundus_samples import fundus_lesions
from training.events import Finished, IterationDone

pytestmark = [pytest.mark.gui, pytest.mark.slow]
CROP = (slice(560, 752), slice(420, 612))  # a 192×192 part of fundus_lesions index 0 with EX and HE


@pytest.fixture
def lesion_crop() -> tuple[np.ndarray, np.ndarray]:
    sample = fundus_lesions(index=0)
    return sample.image[CROP].copy(), sample.labels[CROP].copy()


@pytest.fixture
def untrained_checkpoint(tmp_path: Path) -> Path:
    """A real HRNetV2-W18-small with random weights that runs images at their own 192 px size."""
    path = tmp_path / "start.safetensors"
    meta = {**fundus_metadata("idrid", {"purpose": "test"}), "input_size": [192, 192]}
    save_checkpoint(path, build_model("hrnetv2_w18s", num_classes=4), meta)
    return path


@pytest.fixture
def shadowing_cwd(tmp_path: Path, monkeypatch) -> Path:
    """The current directory holds a ``training`` package that fails when imported."""
    fake = tmp_path / "cwd" / "training"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('the training folder in the current directory was run')\n")
    monkeypatch.chdir(fake.parent)
    return fake.parent


def _widget_with_one_pair(make_napari_viewer, lesion_crop) -> tuple:
    """A viewer with the crop and its ground truth, and a Train widget whose training set holds that pair."""
    image, truth = lesion_crop
    viewer = make_napari_viewer()
    viewer.add_image(image, name="crop", rgb=True)
    data, kwargs, _ = fundus_labels_layer(truth, "truth")
    viewer.add_labels(data, **kwargs)
    widget = wait_until_ready(TrainWidget(viewer))
    widget.image_layer.value, widget.labels_layer.value = viewer.layers["crop"], viewer.layers["truth"]
    widget.add_to_training_set()
    return viewer, widget


def _train(widget: TrainWidget, qtbot, timeout_ms: int = 600_000) -> None:
    widget.start()
    assert widget.process is not None, widget.status.value
    with qtbot.waitSignal(widget.process.finished, timeout=timeout_ms):
        pass


def _mean_iou(viewer, truth: np.ndarray) -> float:
    """Mean per-class IoU at 0.5 (official protocol) of the Segment widget's probability layers."""
    probabilities = np.stack([np.asarray(viewer.layers[f"{c.code} probability"].data) for c in FUNDUS_CLASSES])
    metrics = LesionMetrics()
    metrics.update(probabilities, truth)
    return metrics.compute()["mean"]["iou"]


def test_training_runs_in_a_process_plots_and_registers_the_model(
    make_napari_viewer, qtbot, private_cache, lesion_crop, shadowing_cwd
) -> None:
    """Also from a current directory whose ``training`` folder would shadow the trainer."""
    viewer, widget = _widget_with_one_pair(make_napari_viewer, lesion_crop)
    assert widget.status.value == "1 pairs in the training set"
    widget.model.value = "hrnetv2_w18s"
    widget.iterations.value, widget.batch_size.value, widget.crop.value, widget.device.value = 4, 2, 96, "cpu"
    _train(widget, qtbot)
    assert widget.process.workingDirectory() in ("", str(shadowing_cwd))
    assert widget.registered is not None, widget.status.value
    assert widget.running_on == "cpu"  # from the trainer's Started event, shown in the status line
    assert "cpu" in widget.device.native.itemText(0)  # "auto: cpu (N threads, float32)" on this machine
    assert len(widget.loss_plot.series[0].x) == 4
    assert len(widget.metric_plot.series[0].x) >= 1
    segment = wait_until_ready(SegmentWidget(viewer))
    assert widget.registered in segment.model.choices


def test_stop_ends_the_run_and_keeps_the_last_checkpoint(make_napari_viewer, qtbot, private_cache, lesion_crop) -> None:
    viewer, widget = _widget_with_one_pair(make_napari_viewer, lesion_crop)
    widget.model.value = "hrnetv2_w18s"
    widget.iterations.value, widget.batch_size.value, widget.crop.value, widget.device.value = 10_000, 1, 64, "cpu"
    widget.start()
    qtbot.waitUntil(lambda: any(isinstance(e, IterationDone) for e in widget.events), timeout=300_000)
    widget.stop_button.clicked.emit()
    with qtbot.waitSignal(widget.process.finished, timeout=120_000):
        pass
    finished = [e for e in widget.events if isinstance(e, Finished)]
    assert finished and finished[-1].stopped
    assert Path(finished[-1].last).is_file()
    assert widget.registered is not None


def test_human_in_the_loop_fine_tuning_raises_iou_in_the_corrected_region(
    make_napari_viewer, qtbot, private_cache, lesion_crop, untrained_checkpoint
) -> None:
    from napari_m2mrf.catalog import register_trained_model

    image, truth = lesion_crop
    viewer = make_napari_viewer()
    viewer.add_image(image, name="fundus", rgb=True)
    current = register_trained_model("current model", untrained_checkpoint)
    segment = wait_until_ready(SegmentWidget(viewer))
    segment.model.value = current
    segment.device.value, segment.region.value = "cpu", REGION_WHOLE

    def run_segment() -> float:
        segment.run()
        wait_for_segment_run(qtbot, segment, 120_000)
        return _mean_iou(viewer, truth)

    before = run_segment()
    lesions = viewer.layers["lesions"]
    edited = np.asarray(lesions.data) != truth
    lesions.data_setitem(np.nonzero(lesions.data != truth), truth[lesions.data != truth])  # the user's correction
    train = wait_until_ready(TrainWidget(viewer))
    train.image_layer.value, train.labels_layer.value = viewer.layers["fundus"], lesions
    train.add_to_training_set()
    train.init.value = str(untrained_checkpoint.resolve())
    train.iterations.value, train.batch_size.value, train.crop.value, train.device.value = 120, 2, 128, "cpu"
    train.lr.value = 3e-3
    _train(train, qtbot)
    assert train.registered is not None, train.status.value
    segment.model.value = train.registered  # offered without any refresh by the user
    after = run_segment()
    assert after > before + 0.05, f"mean IoU in the corrected region {before:.3f} → {after:.3f}"
    np.testing.assert_array_equal(np.asarray(lesions.data)[edited], truth[edited])  # corrections survive
