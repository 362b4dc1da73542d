"""The Train widget: train or fine-tune a lesion model from a dataset folder or from corrected layers.

Training runs in a separate process (``python -m training CONFIG``), so the viewer never freezes
and a crash cannot take napari down. The process prints one JSON event per line; the widget plots
the training loss and the validation mAUPR live. Stop asks the run to finish cooperatively (it
writes its last checkpoint). A finished run's model is registered by name and offered by the
Segment widget at once.

"Add to training set" exports the chosen image and Labels layers (your corrections included) as
a pair the trainer reads; "fine-tune from" starts from a bundled or trained checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import QProcess

from napari_m2mrf.widgets.deferred_import import LOADING, STILL_LOADING, after_import, device_choices
from napari_m2mrf.widgets.plot import LinePlot, Series

if TYPE_CHECKING:
    import napari

FROM_LAYERS = "training set from layers"
FROM_FOLDER = "dataset folder"
FROM_SCRATCH = "(train from scratch)"
LAYOUTS = ("idrid", "ddr", "folder")
LOSS_COLOR = (0.9, 0.9, 0.9, 1.0)
METRIC_COLOR = (0.3, 0.8, 1.0, 1.0)
OFFICIAL_INPUT_SIZE = (960, 1440)
DEFAULT_ARCHITECTURE = "m2mrf_hrnetv2_w18s"
MODEL_MODULES = ("torch", "napari_m2mrf.inference.devices", "napari_m2mrf.models")  # imported off the GUI thread


def training_config(
    data: dict[str, Any],
    model: str,
    variant: str,
    init_checkpoint: str,
    iterations: int,
    batch_size: int,
    lr: float,
    crop: int,
    device: str,
    output_dir: Path,
) -> dict[str, Any]:
    """A trainer config (as nested dicts) for the widget's choices: Adam with poly decay, Dice loss,
    the M2MRF augmentations, evaluation four times per run when there is validation data. Images are
    fitted into the input size the Segment widget will use: the official 1440×960 from scratch, the
    starting checkpoint's when fine-tuning."""
    options = {"variant": variant} if model.startswith("m2mrf_") else {}
    input_size = list(OFFICIAL_INPUT_SIZE)
    if init_checkpoint:
        from napari_m2mrf.models import read_checkpoint_metadata

        meta = read_checkpoint_metadata(init_checkpoint)
        model, options = meta["arch"], {k: v for k, v in meta["model"].items() if k != "num_classes"}
        input_size = list(meta["input_size"])  # fine-tune at the scale the model segments at
    return {
        "data": data,
        "augment": {"resize": input_size, "crop": [crop, crop], "scale_range": [0.75, 1.5], "rotate90": True,
                    "hflip": 0.5, "vflip": 0.5, "photometric": True},
        "model": {"name": model, "options": options, "init_checkpoint": init_checkpoint, "sync_batchnorm": False},
        "loss": {"name": "dice"},
        "optim": {"name": "adam", "lr": lr, "weight_decay": 1e-4, "schedule": "poly", "min_lr": lr / 100},
        "run": {"iterations": iterations, "batch_size": batch_size, "device": device, "amp": True,
                "threads": max(1, (os.cpu_count() or 2) - 1),  # leave a core to the viewer
                "eval_every": max(1, iterations // 4), "checkpoint_every": max(1, iterations // 4),
                "output_dir": str(output_dir)},
    }


class TrainWidget(Container):
    """Data, model, schedule and device; Start / Stop; live loss and validation plots."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_m2mrf.cache import cache_dir

        self._viewer = viewer
        self.training_set_dir = cache_dir("training_set")
        self.source = ComboBox(label="data", choices=[FROM_LAYERS, FROM_FOLDER])
        self.folder = FileEdit(label="folder", mode="d", visible=False)
        self.layout_kind = ComboBox(label="layout", choices=list(LAYOUTS), visible=False)
        self.image_layer = ComboBox(label="image", choices=self._layers("Image"))
        self.labels_layer = ComboBox(label="labels", choices=self._layers("Labels"))
        self.add_button = PushButton(text="Add to training set")
        self._loaded = False  # torch and the model registry imported (see deferred_import)
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
            widgets=[
                self.source, self.folder, self.layout_kind, self.image_layer, self.labels_layer, self.add_button, self.model,
                self.variant, self.init, self.iterations, self.batch_size, self.lr, self.crop, self.device,
                self.start_button, self.stop_button, self.status,
            ]
        )
        self.loss_plot = LinePlot("iteration", "loss")
        self.metric_plot = LinePlot("iteration", "mAUPR", y_range=(0.0, 1.0))
        self.native.layout().addWidget(self.loss_plot)
        self.native.layout().addWidget(self.metric_plot)
        self.source.changed.connect(self._show_source_fields)
        self.add_button.clicked.connect(self.add_to_training_set)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self.process: QProcess | None = None
        self.run_dir: Path | None = None
        self.registered: str | None = None
        self.events: list[dict[str, Any]] = []
        after_import(self.native, MODEL_MODULES, self._on_loaded)

    def _on_loaded(self, error: str) -> None:
        """Torch is in: offer the HRNet architectures and the devices, enable Start."""
        if error:
            self._notify(error)
            return
        self._loaded = True
        self.model.reset_choices()
        self.model.value = DEFAULT_ARCHITECTURE
        self.device.reset_choices()
        self.start_button.enabled = self.process is None

    @property
    def ready(self) -> bool:
        """True once torch is in and the architectures are offered (Start works)."""
        return self._loaded

    def _architectures(self, _widget=None) -> list[str]:
        """The HRNet segmentation networks of the registry; a placeholder until torch is in."""
        if not self._loaded:
            return [LOADING]
        from napari_m2mrf.models import list_models

        return [n for n in list_models() if "w18" in n or "w32" in n or "w48" in n]

    def _devices(self, _widget=None) -> list[str]:
        return device_choices(self._loaded)

    def _layers(self, kind: str):
        def choices(_widget=None) -> list:
            import napari

            layer_type = getattr(napari.layers, kind)
            return [layer for layer in self._viewer.layers if isinstance(layer, layer_type) and not layer.multiscale
                    and layer.metadata.get("m2mrf", {}).get("role") != "probability"]

        return choices

    def _checkpoints(self, _widget=None) -> list:
        from napari_m2mrf.inference.model_source import bundled_models
        from napari_m2mrf.inference.trained_models import trained_models

        found = {**bundled_models(), **trained_models()}
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
            from napari_m2mrf.inference.segment_job import as_rgb_uint8

            pairs = add_pair(self.training_set_dir, image.name, as_rgb_uint8(np.asarray(image.data)), np.asarray(labels.data))
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
            kind = self.layout_kind.value
            return {"kind": kind, "root": str(folder), "train_split": "train" if kind != "folder" else "",
                    "val_split": "test" if kind != "folder" else ""}
        pairs = self._pairs()
        if not pairs:
            self._notify("add image/labels pairs to the training set first")
            return None
        return {"kind": "pairs", "pairs": pairs, "val_pairs": pairs}

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
            data, self.model.value, self.variant.value, self.init.value or "", int(self.iterations.value),
            int(self.batch_size.value), float(self.lr.value), int(self.crop.value), str(self.device.value),
            self.run_dir,
        )
        try:
            config_path = save_config(TrainingConfig.from_dict(values, "training widget"), self.run_dir / "config.yaml")
        except UserError as exc:
            self._notify(str(exc))
            return
        self.events, self.registered = [], None
        self.loss_plot.set_series([])
        self.metric_plot.set_series([])
        self.process = QProcess()
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        self.process.readyReadStandardOutput.connect(self._read_events)
        self.process.finished.connect(self._on_finished)
        self.process.start(sys.executable, ["-m", "training", str(config_path)])
        self.start_button.enabled, self.stop_button.enabled = False, True
        self.status.value = f"training in {self.run_dir}"

    def stop(self) -> None:
        """Ask the run to stop after its current iteration; it writes its last checkpoint first."""
        from training.cli import STOP_FILE

        if self.run_dir is not None and self.process is not None:
            (self.run_dir / STOP_FILE).touch()
            self.status.value = "stopping after the current iteration…"

    def _read_events(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode(errors="replace")
        self._partial = getattr(self, "_partial", "") + text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.events.append(event)
            if event.get("event") == "iteration":
                self.status.value = f"iteration {event['iteration']}: loss {event['losses']['loss']:.4f}"
        self._plot()

    def _plot(self) -> None:
        steps = [e for e in self.events if e.get("event") == "iteration"]
        evaluations = [e for e in self.events if e.get("event") == "evaluation"]
        self.loss_plot.set_series(
            [Series(np.array([e["iteration"] for e in steps], float), np.array([e["losses"]["loss"] for e in steps]),
                    LOSS_COLOR, "training loss")]
        )
        self.metric_plot.set_series(
            [Series(np.array([e["iteration"] for e in evaluations], float),
                    np.array([e["mean"]["aupr_official_11pt"] for e in evaluations], float), METRIC_COLOR,
                    "validation mAUPR (official)")]
        )

    def _on_finished(self, exit_code: int, _status=None) -> None:
        from napari_m2mrf.inference.trained_models import register_trained_model

        self._read_events()
        self.start_button.enabled, self.stop_button.enabled = True, False
        finished = [e for e in self.events if e.get("event") == "finished"]
        if exit_code != 0 or not finished:
            error = bytes(self.process.readAllStandardError()).decode(errors="replace").strip().splitlines()
            self._notify(f"training failed: {error[-1] if error else f'exit code {exit_code}'}")
            return
        checkpoints = [e["model_path"] for e in self.events if e.get("event") == "checkpoint"]
        best = [e["model_path"] for e in self.events if e.get("event") == "checkpoint" and e["kind"] == "best"]
        model_path = (best or checkpoints)[-1]
        self.registered = register_trained_model(f"{self.model.value}-{self.run_dir.name}", model_path)
        self.reset_choices()
        stopped = " (stopped early)" if finished[-1].get("stopped") else ""
        self._notify(f"trained{stopped}: {self.registered} is ready in the Segment widget")

    def _notify(self, message: str) -> None:
        from napari.utils.notifications import show_info

        self.status.value = message
        show_info(message)
