"""The Metrics widget on a real viewer: scores a prediction against ground truth, fills the table,
plots the precision–recall curves, and agrees with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from napari_m2mrf._samples import fundus_labels_layer
from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.widgets.metrics_widget import LABELS_PREFIX, PROBABILITIES_PREFIX, MetricsWidget
from napari_m2mrf.widgets.result_layers import show_probabilities

pytestmark = pytest.mark.gui


def _truth() -> np.ndarray:
    truth = np.zeros((120, 160), np.uint8)
    truth[10:40, 10:40] = 1
    truth[60:80, 20:60] = 2
    truth[90:110, 100:150] = 3
    truth[20:24, 120:124] = 4
    return truth


def _noisy_probabilities(truth: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    probs = np.stack([(truth == cls.label).astype(np.float32) for cls in FUNDUS_CLASSES])
    return np.clip(0.7 * probs + rng.uniform(0, 0.5, probs.shape), 0, 1).astype(np.float32)


def _compute(widget: MetricsWidget, qtbot) -> None:
    widget.compute()
    with qtbot.waitSignal(widget.worker.returned, timeout=30_000):
        pass


def test_probability_layers_scored_against_ground_truth(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    truth = _truth()
    image = viewer.add_image(np.zeros((*truth.shape, 3), np.uint8), name="fundus", rgb=True)
    probs = _noisy_probabilities(truth)
    show_probabilities(viewer, image, probs)
    data, kwargs, _ = fundus_labels_layer(truth, "ground truth")
    viewer.add_labels(data, **kwargs)
    widget = MetricsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.prediction.value = PROBABILITIES_PREFIX + "fundus"
    widget.ground_truth.value = "ground truth"
    _compute(widget, qtbot)
    for row, cls in enumerate(FUNDUS_CLASSES):
        expected = average_precision_score((truth == cls.label).ravel(), probs[row].ravel())
        assert abs(float(widget.table.item(row, 1).text()) - expected) < 0.005
    assert len(widget.plot.series) == 4
    assert widget.status.value.startswith("mAUPR")


def test_perfect_labels_prediction_scores_one(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    truth = _truth()
    for name in ("ground truth", "lesions"):
        data, kwargs, _ = fundus_labels_layer(truth.copy(), name)
        viewer.add_labels(data, **kwargs)
    widget = MetricsWidget(viewer)
    widget.prediction.value = LABELS_PREFIX + "lesions"
    widget.ground_truth.value = "ground truth"
    _compute(widget, qtbot)
    mean_row = len(FUNDUS_CLASSES)
    assert widget.table.item(mean_row, 2).text() == "1.0000"  # mIoU
    assert widget.table.item(mean_row, 0).text() == "1.0000"  # mAUPR, official protocol


def test_size_mismatch_is_reported_in_the_widget(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    for name, shape in (("ground truth", (50, 50)), ("lesions", (60, 60))):
        data, kwargs, _ = fundus_labels_layer(np.zeros(shape, np.uint8), name)
        viewer.add_labels(data, **kwargs)
    widget = MetricsWidget(viewer)
    widget.prediction.value = LABELS_PREFIX + "lesions"
    widget.ground_truth.value = "ground truth"
    widget.compute()
    assert "sizes differ" in widget.status.value


def test_incomplete_probability_maps_are_reported_in_the_widget(make_napari_viewer) -> None:
    """A run still adding its probability layers (one per event-loop turn), or one the user deleted."""
    viewer = make_napari_viewer()
    truth = _truth()
    image = viewer.add_image(np.zeros((*truth.shape, 3), np.uint8), name="fundus", rgb=True)
    show_probabilities(viewer, image, _noisy_probabilities(truth))
    viewer.layers.remove(next(layer for layer in viewer.layers if layer.metadata.get("m2mrf", {}).get("code") == "SE"))
    data, kwargs, _ = fundus_labels_layer(truth, "ground truth")
    viewer.add_labels(data, **kwargs)
    widget = MetricsWidget(viewer)
    widget.prediction.value = PROBABILITIES_PREFIX + "fundus"
    widget.ground_truth.value = "ground truth"
    widget.compute()
    assert "not all there (no SE)" in widget.status.value and widget.worker is None
