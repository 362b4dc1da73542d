"""The Train widget: train or fine-tune a lesion model from a dataset folder or from corrected layers.

Training runs in a separate process (``python -P -m training CONFIG``, see
:func:`training.presets.trainer_command`), so the viewer never freezes and a crash cannot take napari
down. The process prints one JSON event per line (:mod:`training.events`); the widget plots the
training loss and the validation mAUPR live. The run's config comes from :mod:`training.presets`. Stop asks the run to finish cooperatively (it
writes its last checkpoint). A finished run's model is registered by name and offered by the
Segment widget at once.

"Add to training set" exports the chosen image and Labels layers (your corrections included) as
a pair the trainer reads; "fine-tune from" starts from a bundled or trained checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import QProcess
from superqt import QCollapsible

from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.deferred_import import LOADING, STILL_LOADING, device_choices
from napari_m2mrf.widgets.plot import LinePlot, Series
from training.events import Evaluated, Event, EventStream, Finished, IterationDone, Started, trained_model_path
from training.presets import DEFAULT_ARCHITECTURE, LAYOUTS, folder_data, pairs_data, trainer_command, training_config

if TYPE_CHECKING:
    import napari

FROM_LAYERS = "training set from layers"
FROM_FOLDER = "dataset folder"
FROM_SCRATCH = "(train from scratch)"
LOSS_COLOR = (0.9, 0.9, 0.9, 1.0)
METRIC_COLOR = (0.3, 0.8, 1.0, 1.0)
MODEL_MODULES = ("torch", "napari_m2mrf.inference.devices", "napari_m2mrf.models")  # imported off the GUI thread


def _trainable(layer: Any) -> bool:
    return not layer.multiscale and layer.metadata.get("m2mrf", {}).get("role") != "probability"


class TrainWidget(PluginWidget):
    """Data, model, schedule and device; Start / Stop; live loss and validation plots."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_m2mrf.cache import cache_dir

        self.training_set_dir = cache_dir("training_set")
        self.source = ComboBox(label="data", choices=[FROM_LAYERS, FROM_FOLDER])
        self.folder = FileEdit(label="folder", mode="d", visible=False)
        self.layout_kind = ComboBox(label="layout", choices=list(LAYOUTS), visible=False)
        self.image_layer = ComboBox(label="image", choices=layer_choices(viewer, "Image", _trainable))
        self.labels_layer = ComboBox(label="labels", choices=layer_choices(viewer, "Labels", _trainable))
        self.add_button = PushButton(text="Add to training set")
        self.model = ComboBox(label="model", choices=self._architectures)
        self.variant = ComboBox(label="variant", choices=["A", "B", "C", "D"], value="A")
        self.init = ComboBox(label="fine-tune from", choices=self._checkpoints)
        self.iterations = SpinBox(label="iterations", value=200, min=1, max=1_000_000)
        self.batch_size = SpinBox(label="batch size", value=2, min=1, max=256)
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4)
        self.crop = SpinBox(label="crop (px)", value=256, min=32, max=4096, step=32)
        self.device = ComboBox(label="device", choices=self._devices, value="auto")
        self.start_button = PushButton(text="Start", enabled=False)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.status = Label(value=f"{len(self._pairs())} pairs in the training set")
        super().__init__(
            viewer,
            [
                self.source, self.folder, self.layout_kind, self.image_layer, self.labels_layer, self.add_button,
                self.model, self.start_button, self.stop_button, self.status,
            ],
        )
        # the schedule and device fold away, so the widget fits a 1000 px tall screen
        self.advanced_options = Container(
            widgets=[self.variant, self.init, self.iterations, self.batch_size, self.lr, self.crop, self.device]
        )
        self.advanced_options.margins = (0, 0, 0, 0)
        self.advanced = QCollapsible("Advanced options")
        self.advanced.setToolTip("variant, starting checkpoint, schedule and device")
        self.advanced.addWidget(self.advanced_options.native)
        self.advanced.layout().setContentsMargins(0, 0, 0, 0)
        self.advanced.content().layout().setContentsMargins(0, 0, 0, 0)
        self.body_layout.insertWidget(self.index(self.model) + 1, self.advanced)
        self.set_tooltips({
            self.source: "train from image/labels pairs added from the viewer, or from a dataset folder",
            self.folder: "the dataset folder (IDRiD, DDR or a plain images/masks layout)",
            self.layout_kind: "how the dataset folder is laid out",
            self.image_layer: "the image of the pair to add",
            self.labels_layer: "the labels of the pair to add (your corrections included)",
            self.add_button: "add the chosen image and labels, as they are now, to the training set",
            self.model: "the architecture to train (HRNetV2 or M2MRF-HRNetV2)",
            self.variant: "M2MRF variant (paper §3.3): A one-step/one-step, B one-step/cascade, C cascade/one-step, "
                          "D cascade/cascade",
            self.init: "start from a bundled or trained model (fine-tuning), or from scratch",
            self.iterations: "training iterations",
            self.batch_size: "images per iteration",
            self.lr: "learning rate",
            self.crop: "training crop size in pixels",
            self.device: "where training runs: auto picks a GPU when there is one",
            self.start_button: "start training in a separate process; the model is offered by Segment when done",
            self.stop_button: "stop training after writing a last checkpoint",
        })
        self.loss_plot = LinePlot("iteration", "loss")
        self.metric_plot = LinePlot("iteration", "mAUPR", y_range=(0.0, 1.0))
        self.body_layout.addWidget(self.loss_plot)
        self.body_layout.addWidget(self.metric_plot)
        self._fit_width()
        self.source.changed.connect(self._show_source_fields)
        self.add_button.clicked.connect(self.add_to_training_set)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.process: QProcess | None = None
        self.run_dir: Path | None = None
        self.registered: str | None = None
        self.events: list[Event] = []
        self.running_on = ""  # the device of the current run, from its Started event
        self._stream = EventStream()
        self._load_in_background(MODEL_MODULES)

    def reset_choices(self, *args: Any) -> None:
        """Refresh the choices, those folded under "Advanced options" too."""
        super().reset_choices(*args)
        advanced = getattr(self, "advanced_options", None)
        if advanced is not None:
            advanced.reset_choices()

    def _on_loaded(self) -> None:
        """Torch is in: offer the HRNet architectures and the devices, enable Start."""
        self.model.reset_choices()
        self.model.value = DEFAULT_ARCHITECTURE
        self.device.reset_choices()
        self.start_button.enabled = self.process is None

    def _architectures(self, _widget=None) -> list[str]:
        """The HRNet segmentation networks of the registry; a placeholder until torch is in."""
        if not self._loaded:
            return [LOADING]
        from training.presets import architectures

        return architectures()

    def _devices(self, _widget=None) -> list[tuple[str, str]]:
        return device_choices(self._loaded)

    def _checkpoints(self, _widget=None) -> list:
        from napari_m2mrf.catalog import named_models

        found = named_models()
        return [(FROM_SCRATCH, "")] + [(name, str(path)) for name, path in found.items()]

    def _show_source_fields(self, source: str) -> None:
        from_folder = source == FROM_FOLDER
        for widget in (self.folder, self.layout_kind):
            widget.visible = from_folder
        for widget in (self.image_layer, self.labels_layer, self.add_button):
            widget.visible = not from_folder

    def _pairs(self) -> list[dict[str, str]]:
        from napari_m2mrf.io.training_set import read_pairs

        return read_pairs(self.training_set_dir)

    def add_to_training_set(self) -> None:
        """Export the chosen image and labels (as they are now, corrections included) as a training pair."""
        from napari_m2mrf.io.training_set import add_pair
        from napari_m2mrf.errors import UserError

        image, labels = self.image_layer.value, self.labels_layer.value
        if image is None or labels is None:
            self._notify("choose an image layer and a Labels layer to add")
            return
        try:
            from napari_m2mrf.io.pixels import to_rgb8

            pairs = add_pair(self.training_set_dir, image.name, to_rgb8(np.asarray(image.data)), np.asarray(labels.data))
        except UserError as exc:
            self._notify(str(exc))
            return
        self._notify(f"{len(pairs)} pairs in the training set")

    def _data_section(self) -> dict[str, Any] | None:
        if self.source.value == FROM_FOLDER:
            folder = Path(self.folder.value)
            if str(self.folder.value) in ("", ".") or not folder.is_dir():
                self._notify("choose the dataset folder")
                return None
            return folder_data(self.layout_kind.value, folder)
        pairs = self._pairs()
        if not pairs:
            self._notify("add image/labels pairs to the training set first")
            return None
        return pairs_data(pairs)

    def start(self) -> None:
        """Write the run's config and start the trainer in its own process."""
        from napari_m2mrf.errors import UserError
        from napari_m2mrf.cache import cache_dir
        from training.config import TrainingConfig, save_config

        if not self._loaded:
            self._notify(STILL_LOADING)
            return
        data = self._data_section()
        if data is None:
            return
        self.run_dir = cache_dir("training_runs") / time.strftime("%Y%m%d-%H%M%S")
        values = training_config(
            data, model=self.model.value, variant=self.variant.value, init_checkpoint=self.init.value or "",
            iterations=int(self.iterations.value), batch_size=int(self.batch_size.value), lr=float(self.lr.value),
            crop=int(self.crop.value), device=str(self.device.value), output_dir=self.run_dir,
        )
        try:
            config_path = save_config(TrainingConfig.from_dict(values, "training widget"), self.run_dir / "config.yaml")
        except UserError as exc:
            self._notify(str(exc))
            return
        self.events, self.registered, self._stream = [], None, EventStream()
        self.loss_plot.set_series([])
        self.metric_plot.set_series([])
        self.process = QProcess()
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        self.process.readyReadStandardOutput.connect(self._read_events)
        self.process.finished.connect(self._on_finished)
        program, *arguments = trainer_command(config_path)
        self.process.start(program, arguments)
        self.start_button.enabled, self.stop_button.enabled = False, True
        self.status.value = f"training in {self.run_dir}"

    def stop(self) -> None:
        """Ask the run to stop after its current iteration; it writes its last checkpoint first."""
        from training.cli import STOP_FILE

        if self.run_dir is not None and self.process is not None:
            (self.run_dir / STOP_FILE).touch()
            self.status.value = "stopping after the current iteration…"

    def _read_events(self) -> None:
        events = self._stream.feed(bytes(self.process.readAllStandardOutput()).decode(errors="replace"))
        self.events += events
        for event in events:
            if isinstance(event, Started):
                self.running_on = event.device
                self.status.value = f"training on {event.device} in {self.run_dir}"
            elif isinstance(event, IterationDone):
                self.status.value = f"iteration {event.iteration}: loss {event.losses['loss']:.4f} (on {self.running_on})"
        self._plot()

    def _plot(self) -> None:
        steps = [e for e in self.events if isinstance(e, IterationDone)]
        evaluations = [e for e in self.events if isinstance(e, Evaluated)]
        self.loss_plot.set_series(
            [Series(np.array([e.iteration for e in steps], float), np.array([e.losses["loss"] for e in steps], float),
                    LOSS_COLOR, "training loss")]
        )
        self.metric_plot.set_series(
            [Series(np.array([e.iteration for e in evaluations], float),
                    np.array([e.mean["aupr_official_11pt"] for e in evaluations], float), METRIC_COLOR,
                    "validation mAUPR (official)")]
        )

    def _on_finished(self, exit_code: int, _status=None) -> None:
        from napari_m2mrf.catalog import register_trained_model

        self._read_events()
        self.start_button.enabled, self.stop_button.enabled = True, False
        model_path = trained_model_path(self.events)
        if exit_code != 0 or model_path is None:
            error = bytes(self.process.readAllStandardError()).decode(errors="replace").strip().splitlines()
            self._notify(f"training failed: {error[-1] if error else f'exit code {exit_code}'}")
            return
        self.registered = register_trained_model(f"{self.model.value}-{self.run_dir.name}", model_path)
        self.reset_choices()
        finished = [e for e in self.events if isinstance(e, Finished)]
        stopped = " (stopped early)" if finished[-1].stopped else ""
        self._notify(f"trained{stopped}: {self.registered} is ready in the Segment widget")
