"""The Metrics widget: score a prediction against a ground-truth Labels layer, per class.

The prediction is either the per-class probability layers a Segment run made for an image, or a
Labels layer (scored as 0/1 probabilities). Both AUPRs (the official 11-threshold protocol and the
dense one) and IoU/F1 at 0.5 fill a table, and the dense precision–recall curves are plotted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Label, PushButton
from qtpy.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.metrics import LesionMetrics
from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.plot import LinePlot, Series
from napari_m2mrf.widgets.result_layers import PROBABILITY

if TYPE_CHECKING:
    import napari

COLUMNS = (("AUPR (official 11-pt)", "aupr_official_11pt"), ("AUPR (dense)", "aupr_dense"), ("IoU@0.5", "iou"), ("F1@0.5", "f1"))
PROBABILITIES_PREFIX = "probabilities of "
LABELS_PREFIX = "labels: "


def prediction_stack(viewer: Any, choice: str) -> np.ndarray:
    """(K, H, W) float probabilities for a prediction choice of the widget."""
    if choice.startswith(PROBABILITIES_PREFIX):
        source = choice[len(PROBABILITIES_PREFIX):]
        by_code = {
            layer.metadata["m2mrf"]["code"]: np.asarray(layer.data)
            for layer in viewer.layers
            if layer.metadata.get("m2mrf", {}).get("role") == PROBABILITY and layer.metadata["m2mrf"]["source"] == source
        }
        missing = [cls.code for cls in FUNDUS_CLASSES if cls.code not in by_code]
        if missing:  # a run still adding its layers (one per event-loop turn), or layers the user deleted
            raise UserError(f"the probability maps of {source} are not all there (no {', '.join(missing)}); "
                            "wait until the Segment run has shown them, or run it again")
        return np.stack([by_code[cls.code] for cls in FUNDUS_CLASSES]).astype(np.float32)
    labels = np.asarray(viewer.layers[choice[len(LABELS_PREFIX):]].data)
    return np.stack([(labels == cls.label) for cls in FUNDUS_CLASSES]).astype(np.float32)


def score(probabilities: np.ndarray, ground_truth: np.ndarray) -> tuple[dict, dict]:
    """Metrics and dense precision–recall curves of one prediction."""
    metrics = LesionMetrics()
    metrics.update(probabilities, ground_truth)
    return metrics.compute(), metrics.precision_recall_curves(dense=True)


class MetricsWidget(PluginWidget):
    """Prediction and ground-truth choices, Compute, a results table and a precision–recall plot."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer  # the prediction choices read it while the boxes are built
        self._labels_layers = layer_choices(viewer, "Labels")
        self.prediction = ComboBox(label="prediction", choices=self._prediction_choices)
        self.ground_truth = ComboBox(label="ground truth", choices=self._labels_choices)
        self.compute_button = PushButton(text="Compute")
        self.status = Label(value="")
        super().__init__(viewer, [self.prediction, self.ground_truth, self.compute_button, self.status])
        self.set_tooltips({
            self.prediction: "the probability maps of a Segment run, or a Labels layer scored as 0/1",
            self.ground_truth: "the reference Labels layer",
            self.compute_button: "score the prediction against the ground truth, per class",
        })
        self.table = QTableWidget(len(FUNDUS_CLASSES) + 1, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([title.replace(" (", "\n(") for title, _ in COLUMNS])
        for column, (title, _) in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(column).setToolTip(title)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setMinimumHeight(2 * header.fontMetrics().height() + 8)
        self.table.setToolTip("AUPR under the official 11-threshold protocol and dense; IoU and F1 at 0.5")
        self.table.setVerticalHeaderLabels([cls.code for cls in FUNDUS_CLASSES] + ["mean"])
        self.plot = LinePlot("recall", "precision", (0.0, 1.0), (0.0, 1.0))
        self.body_layout.addWidget(self.table)
        self.body_layout.addWidget(self.plot)
        self._fit_width()
        self.compute_button.clicked.connect(self.compute)
        self.worker = None

    def _prediction_choices(self, _widget=None) -> list[str]:
        sources = []
        for layer in self._viewer.layers:
            tag = layer.metadata.get("m2mrf", {})
            if tag.get("role") == PROBABILITY and tag["source"] not in sources:
                sources.append(tag["source"])
        return [PROBABILITIES_PREFIX + s for s in sources] + [LABELS_PREFIX + name for name in self._labels_choices()]

    def _labels_choices(self, _widget=None) -> list[str]:
        return [layer.name for layer in self._labels_layers()]

    def compute(self) -> None:
        """Score in a worker thread; the table and plot fill in when it returns."""
        from superqt.utils import create_worker

        if self.prediction.value is None or self.ground_truth.value is None:
            self.status.value = "choose a prediction and a ground-truth Labels layer"
            return
        try:
            probabilities = prediction_stack(self._viewer, self.prediction.value)
        except UserError as error:
            self.status.value = str(error)
            return
        truth = np.asarray(self._viewer.layers[self.ground_truth.value].data)
        if truth.shape != probabilities.shape[1:]:
            self.status.value = f"sizes differ: prediction {probabilities.shape[1:]}, ground truth {truth.shape}"
            return
        self.status.value = "computing…"
        self.worker = create_worker(
            score, probabilities, truth, _connect={"returned": self._show, "errored": self._on_error}
        )

    def _on_error(self, exc: Exception) -> None:
        self.status.value = f"failed: {exc}"

    def _show(self, result: tuple[dict, dict]) -> None:
        metrics, curves = result
        rows = [metrics["per_class"][cls.code] for cls in FUNDUS_CLASSES] + [metrics["mean"]]
        for row, values in enumerate(rows):
            for column, (_, key) in enumerate(COLUMNS):
                value = values[key]
                self.table.setItem(row, column, QTableWidgetItem("–" if np.isnan(value) else f"{value:.4f}"))
        self.plot.set_series(
            [
                Series(curves[cls.code].recall, curves[cls.code].precision, cls.color, cls.code)
                for cls in FUNDUS_CLASSES
            ]
        )
        mean = metrics["mean"]
        self.status.value = f"mAUPR {mean['aupr_official_11pt']:.4f} (official), mIoU {mean['iou']:.4f}"
        self.last_metrics = metrics
