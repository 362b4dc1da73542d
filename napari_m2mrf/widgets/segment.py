"""The Segment widget: run a lesion model on an image layer, off the GUI thread, with progress and Cancel.

Results land in the image's ``lesions`` Labels layer (the user's corrections are kept across runs)
and in hidden per-class probability layers. The threshold boxes follow the chosen model: one per
class, starting at the thresholds calibrated in its checkpoint (0.5 where it has none); a softmax
model takes each pixel's most probable class, so its boxes are disabled.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QObject, QTimer, Signal

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.regions import Box, boxes_from_polygons, clip_box
from napari_m2mrf.models.multiscale import has_class_scales, multiscale_thresholds
from napari_m2mrf.models.thresholds import DEFAULT_THRESHOLD, class_thresholds, uses_thresholds
from napari_m2mrf.jobs import Cancelled, CancelToken
from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.deferred_import import LOADING, STILL_LOADING, device_choices
from napari_m2mrf.widgets.shortcuts import SHORTCUTS, add_shortcut
from napari_m2mrf.widgets.throttle import Throttle
from napari_m2mrf.widgets.result_layers import (
    LESIONS,
    PREDICTION_KEY,
    find_result_layer,
    probability_steps,
    show_lesions,
)
from napari_m2mrf.widgets.view import canvas_corners_world

if TYPE_CHECKING:
    import napari

    from napari_m2mrf.inference.segment_job import SegmentRequest, SegmentResult
    from napari_m2mrf.inference.slide import SlideResult

# imported off the GUI thread when the widget opens (they bring in torch)
INFERENCE_MODULES = (
    "torch",
    "napari_m2mrf.inference.devices",
    "napari_m2mrf.catalog",
    "napari_m2mrf.inference.segment_job",
    "napari_m2mrf.inference.model_cache",
    "napari_m2mrf.inference.slide",
)

logger = logging.getLogger(__name__)

REGION_WHOLE = "whole image (official protocol)"
REGION_SCALES = "whole image, test-time scales"
REGION_TILES = "whole image, full-resolution tiles"
REGION_VIEW = "visible field of view"
REGION_SHAPES = "shapes in a Shapes layer"
CHECKPOINT_FILE = "checkpoint file…"
BACKGROUND_NICENESS = 10
LAYER_GAP_MS = 10  # event-loop time between two result layers being added
PRELOAD_DELAY_MS = 300  # a chosen model starts loading once the choice has stood this long
BAR_INTERVAL_S = 0.25  # the progress bar is repainted at most this often (see _on_progress)
STATUS_INTERVAL_S = 1.0  # the status line follows the job's messages at most this often
SIGMOID_TIP = (
    "sigmoid (multi-label) model: a pixel gets the most probable class whose probability is above its "
    "threshold; the default is the threshold calibrated in the checkpoint (0.5 where it has none)"
)
SOFTMAX_TIP = "softmax model: a pixel gets its most probable class (argmax); thresholds do not apply"


def _counters_removed(message: str) -> str:
    """A progress message without its numbers: what stage it tells of ("tile 3/9" -> "tile /")."""
    return re.sub(r"[0-9]+", "", message)


def _threshold_box(code: str) -> FloatSpinBox:
    return FloatSpinBox(label=f"{code} threshold", value=DEFAULT_THRESHOLD, min=0.01, max=0.99, step=0.05,
                        tooltip=SIGMOID_TIP)


class _WorkerSignals(QObject):
    """Carries progress and notices from the worker thread to the GUI thread (queued connections)."""

    progressed = Signal(int, int, str)
    preloaded = Signal(str)
    noticed = Signal(str)


def visible_box(viewer: napari.Viewer, layer: napari.layers.Layer) -> Box | None:
    """The part of ``layer`` (data pixels) visible on the canvas, or None when none of it is."""
    corners_world = canvas_corners_world(viewer)
    corners_data = np.array([layer.world_to_data(c) for c in corners_world])[:, -2:]
    height, width = layer.data.shape[:2]
    return clip_box((*corners_data.min(axis=0), *(corners_data.max(axis=0) + 1)), height, width)


def run_in_background(job, *args, **kwargs):
    """Run ``job`` at a lower CPU priority than the GUI thread (Linux: per-thread nice 10), so the
    viewer keeps answering on a machine with few cores; threads the job starts inherit the priority."""
    if hasattr(os, "setpriority"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    return job(*args, **kwargs)


class SegmentWidget(PluginWidget):
    """Image, model, device, region and per-class thresholds; Run / Cancel; a progress bar."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_m2mrf.catalog import catalogue_changed

        source_images = layer_choices(viewer, "Image", lambda layer: not layer.metadata.get("m2mrf"))
        self.image = ComboBox(label="image", choices=source_images)
        self.model = ComboBox(label="model", choices=self._model_choices)
        self.checkpoint = FileEdit(label="checkpoint", filter="*.safetensors *.pt", visible=False)
        self.device = ComboBox(label="device", choices=self._device_choices, value="auto")
        self.region = ComboBox(label="region", choices=[REGION_WHOLE, REGION_SCALES, REGION_TILES, REGION_VIEW,
                                                        REGION_SHAPES])
        self.shapes = ComboBox(label="shapes", choices=layer_choices(viewer, "Shapes"), visible=False)
        self.tile = SpinBox(label="tile (px)", value=1024, min=128, max=8192, step=128)
        self.thresholds = [_threshold_box(cls.code) for cls in FUNDUS_CLASSES]
        self.run_button = PushButton(text="Run", enabled=False)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value=LOADING)
        super().__init__(
            viewer,
            [
                self.image, self.model, self.checkpoint, self.device, self.region, self.shapes, self.tile,
                *self.thresholds, self.run_button, self.cancel_button, self.progress, self.status,
            ],
        )
        self.set_tooltips({
            self.image: "the photograph (or slide) to segment",
            self.model: "a bundled or trained lesion model, or a checkpoint file (untrained architectures are "
                        "not offered: train them first in the Train widget)",
            self.checkpoint: "a .safetensors checkpoint (or an official mmseg .pth) to run",
            self.device: "where the model runs: auto picks a GPU when there is one",
            self.region: "whole image at the model's input size (the official protocol, one pass); the whole image "
                         "at each of the model's test-time scales, per class (the protocol of its cross-validated "
                         "figures, with the thresholds calibrated on it; about 5x the time of one pass; one pass "
                         "when it records none); "
                         "full-resolution tiles; the visible field of view; or the shapes of a Shapes layer",
            self.shapes: "the Shapes layer whose rectangles or polygons are segmented",
            self.tile: "tile size in pixels for full-resolution tiles (smaller needs less memory)",
            self.run_button: f"segment the image in the background ({SHORTCUTS['segment_run']})",
            self.cancel_button: "stop the run; nothing is changed",
            self.progress: "progress of the run",
        })
        add_shortcut(self.native, "segment_run", self._run_shortcut)
        self.model.changed.connect(lambda value: setattr(self.checkpoint, "visible", value == CHECKPOINT_FILE))
        self.model.changed.connect(self._follow_model)
        self.checkpoint.changed.connect(self._follow_model)
        self.region.changed.connect(lambda value: setattr(self.shapes, "visible", value == REGION_SHAPES))
        self.region.changed.connect(lambda *_: self._follow_model(preload=False))  # scales have thresholds of their own
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._signals = _WorkerSignals()
        self._signals.progressed.connect(self._on_progress)
        self._signals.noticed.connect(self._notify)
        self._signals.preloaded.connect(self._preloaded)
        self._loading_message = ""
        self._bar: Throttle[tuple[int, int, str]] = Throttle(BAR_INTERVAL_S, self._show_progress)
        self._status_line: Throttle[str] = Throttle(STATUS_INTERVAL_S, self._show_status)
        self._cancel: CancelToken | None = None
        self.worker = None
        self.pending_layers: list = []  # result layers still to add, one per event-loop turn (see _show)
        self.preload_worker = None  # loads the chosen model while the user looks (see _preload_model)
        self._preload_cancel: CancelToken | None = None
        self.native.destroyed.connect(self._stop_preload)
        self._preload_timer = QTimer(self.native)
        self._preload_timer.setSingleShot(True)
        self._preload_timer.setInterval(PRELOAD_DELAY_MS)
        self._preload_timer.timeout.connect(self._preload_model)
        refresh_models = self.model.reset_choices
        catalogue_changed.connect(refresh_models)  # a model trained meanwhile is offered at once
        self.native.destroyed.connect(lambda: catalogue_changed.disconnect(refresh_models))
        self.body_layout.addStretch(1)  # a tall dock keeps the controls together at the top
        self._load_in_background(INFERENCE_MODULES)

    def _run_shortcut(self) -> None:
        if self.run_button.enabled:
            self.run()

    def _on_loaded(self) -> None:
        """Torch is in: offer the devices and models, enable Run, follow the chosen model (its thresholds;
        it starts loading)."""
        self.device.reset_choices()
        self.run_button.enabled = True
        self.status.value = ""
        self.model.reset_choices()
        self._follow_model()

    def _device_choices(self, _widget=None) -> list[str]:
        return device_choices(self._loaded)

    def _model_choices(self, _widget=None) -> list[str]:
        """Bundled, trained and registry models, then a checkpoint file; a placeholder until torch is in."""
        if not self._loaded:
            return [LOADING]
        from napari_m2mrf.catalog import model_choices

        return model_choices() + [CHECKPOINT_FILE]

    def _follow_model(self, *_, preload: bool = True) -> None:
        """One threshold box per class of the chosen model, set to its checkpoint's thresholds (those
        calibrated on its test-time scales when that region is chosen and it has them).

        A model whose metadata cannot be read keeps the boxes as they are (running it reports why).
        """
        if not self._loaded:
            return
        from napari_m2mrf.catalog import model_metadata

        meta = model_metadata(self._model_source())
        if meta is None:
            return
        sigmoid = uses_thresholds(meta)
        try:
            scales = self.region.value == REGION_SCALES and has_class_scales(meta)
            defaults = multiscale_thresholds(meta) if scales else class_thresholds(meta)
        except UserError as exc:
            self._notify(f"{self._model_source()}: {exc}; using {DEFAULT_THRESHOLD}")
            defaults = {}
        codes = [str(c["code"]) for c in meta["classes"] if sigmoid or int(c["label"]) != 0]
        if [spin.label for spin in self.thresholds] != [f"{code} threshold" for code in codes]:
            for spin in self.thresholds:
                self.remove(spin)
            self.thresholds = [_threshold_box(code) for code in codes]
            start = self.index(self.run_button)
            for offset, spin in enumerate(self.thresholds):
                self.insert(start + offset, spin)
        for code, spin in zip(codes, self.thresholds):
            spin.value = defaults.get(code, DEFAULT_THRESHOLD)
            spin.enabled = sigmoid
            spin.tooltip = SIGMOID_TIP if sigmoid else SOFTMAX_TIP
        if preload:  # a new model choice (a region change keeps the model)
            self._stop_preload()  # an earlier choice's load that has not started never will
            self._preload_timer.start()  # load this one once the choice has settled (see _preload_model)

    @property
    def loading(self) -> bool:
        """True while PyTorch imports or the chosen model is about to load or loading (background work that
        holds the GIL the GUI thread needs; the demo adds its sample layers after it)."""
        worker = self.preload_worker
        return not self._loaded or self._preload_timer.isActive() or (worker is not None and worker.is_alive())

    def _stop_preload(self, *_) -> None:
        if self._preload_cancel is not None:
            self._preload_cancel.set()

    def _preload_model(self) -> None:
        """Load the chosen model in a thread while the user looks, so Run starts at once
        (:mod:`~napari_m2mrf.inference.model_cache`). The status line says so; Run works meanwhile (the run
        waits for this load instead of starting a second). It starts :data:`PRELOAD_DELAY_MS` after the
        choice (a quick succession of choices loads the last one only), not while a run is going, and after
        any earlier load; choosing another model cancels a load that has not started; a model that cannot
        be loaded is reported by the run, not here. The thread outlives a closed widget harmlessly (the
        model stays cached for the next one)."""
        from napari_m2mrf.catalog import resolve
        from napari_m2mrf.inference.model_cache import cached_model, load_model

        self._stop_preload()
        if self._cancel is not None:  # a run is going: it loads what it needs; a load beside it slows both
            return
        try:
            ref = resolve(self._model_source())
        except UserError:
            return
        if ref.path is None or cached_model(ref) is not None:
            return
        cancel = self._preload_cancel = CancelToken()
        self._loading_message = self.status.value = f"loading {ref.name}… (Run works meanwhile)"
        signals, previous = self._signals, self.preload_worker

        def preload() -> None:
            if previous is not None:  # one load at a time: two at once on two cores stall the viewer
                previous.join()
            try:
                load_model(ref, cancel)
            except Exception as exc:  # noqa: BLE001 - the run reports a model that cannot load
                logger.info("preloading %s: %s", ref.name, exc)
                return
            try:
                signals.preloaded.emit(ref.name)
            except RuntimeError:  # the widget is gone
                pass

        # not a daemon: a process that ends during the load waits for it (a second or two) instead of being
        # killed inside torch's C++ (which aborts the process)
        self.preload_worker = threading.Thread(target=preload, name=f"m2mrf-preload-{ref.name}", daemon=False)
        self.preload_worker.start()

    def _preloaded(self, name: str) -> None:
        if self.status.value == self._loading_message and self._loading_message.startswith(f"loading {name}…"):
            self.status.value = f"{name} is loaded"

    def _threshold_values(self) -> list[float]:
        return [float(spin.value) for spin in self.thresholds]

    def _thresholds_apply(self) -> bool:
        return any(spin.enabled for spin in self.thresholds)

    def _model_source(self) -> str:
        if self.model.value == CHECKPOINT_FILE:
            return str(self.checkpoint.value)
        return str(self.model.value)

    def _request(self, layer) -> SegmentRequest:
        from napari_m2mrf.inference.segment_job import SCALES, TILES, WHOLE, SegmentRequest

        height, width = layer.data.shape[:2]
        boxes: list[Box] | None = None
        if self.region.value == REGION_VIEW:
            box = visible_box(self._viewer, layer)
            if box is None:
                raise UserError(f"no part of {layer.name!r} is visible")
            boxes = [box]
        elif self.region.value == REGION_SHAPES:
            shapes = self.shapes.value
            if shapes is None or len(shapes.data) == 0:
                raise UserError("draw rectangles or polygons in a Shapes layer first")
            polygons = [np.array([layer.world_to_data(shapes.data_to_world(v)) for v in s]) for s in shapes.data]
            boxes = boxes_from_polygons(polygons, height, width)
            if not boxes:
                raise UserError(f"the shapes in {shapes.name!r} do not overlap {layer.name!r}")
        return SegmentRequest(
            model=self._model_source(),
            device=str(self.device.value),
            mode={REGION_TILES: TILES, REGION_SCALES: SCALES}.get(self.region.value, WHOLE),
            boxes=boxes,
            thresholds=self._threshold_values(),
            tile=int(self.tile.value),
            overlap=max(32, int(self.tile.value) // 8),
        )

    def run(self) -> None:
        """Start a run in a worker thread (the GUI stays responsive); errors become notifications."""
        from napari_m2mrf.inference.segment_job import run_segmentation
        from napari_m2mrf.inference.slide import is_slide_model

        if not self._loaded:
            self._notify(STILL_LOADING)
            return
        layer = self.image.value
        if layer is None:
            self._notify("open an image first")
            return
        if layer.multiscale or is_slide_model(self._model_source()):
            self._run_slide(layer)
            return
        try:
            request = self._request(layer)
        except UserError as exc:
            self._notify(str(exc))
            return
        image = np.asarray(layer.data)
        self._start(run_segmentation, image, request, lambda result: self._show(layer, result),
                    f"running {request.model} on {layer.name}…")

    def _start(self, job, source, request, on_result, status: str) -> None:
        """Run ``job(source, request, progress=, cancel=, notify=)`` in a background worker thread."""
        from superqt.utils import create_worker

        self._cancel = CancelToken()
        signals = self._signals
        self.worker = create_worker(
            run_in_background,
            job,
            source,
            request,
            progress=lambda done, total, message: signals.progressed.emit(done, total, message),
            cancel=self._cancel,
            notify=signals.noticed.emit,
            _start_thread=False,
            _connect={"returned": on_result, "errored": self._on_error, "finished": self._on_finished},
        )
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress.value = 0
        self.status.value = status
        self.worker.start()

    def cancel(self) -> None:
        """Ask the running job to stop (within one network layer or one chunk of work)."""
        if self._cancel is not None:
            self._cancel.set()
            self.status.value = "cancelling…"

    def _on_progress(self, done: int, total: int, message: str) -> None:
        """Show the job's progress, at most every :data:`BAR_INTERVAL_S` (a status line that only counts
        on, every :data:`STATUS_INTERVAL_S`; a new stage's message at once): each repaint of a dock makes
        Qt composite napari's OpenGL canvas again, 40-110 ms of CPU on software OpenGL, so a job reporting
        every layer would slow itself and the viewer. The last report of a job is shown at once."""
        self._bar.offer((done, total, message), at_once=done >= total)

    def _show_progress(self, report: tuple[int, int, str]) -> bool:
        done, total, message = report
        try:
            self.progress.max = max(total, 1)
            self.progress.value = done
        except RuntimeError:  # the widget is gone (its viewer closed) while the job winds down
            return False
        new_stage = _counters_removed(message) != _counters_removed(str(self.status.value))
        self._status_line.offer(message, at_once=done >= total or new_stage)  # only a stage's counters wait
        return True

    def _show_status(self, message: str) -> bool:
        try:
            self.status.value = message
        except RuntimeError:  # the widget is gone
            return False
        return True

    def _on_error(self, exc: Exception) -> None:
        self._bar.drop()  # a report still waiting would hide what happened
        self._status_line.drop()
        if isinstance(exc, Cancelled):
            self._notify("segmentation cancelled; nothing was changed")
        elif isinstance(exc, UserError):
            self._notify(str(exc))
        else:
            from napari.utils.notifications import show_error

            self.status.value = f"failed: {exc}"
            show_error(f"segmentation failed: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._cancel = None
        self._bar.drop()
        self._status_line.drop()
        try:
            self.run_button.enabled, self.cancel_button.enabled = True, False
        except RuntimeError:  # the widget is gone (its viewer closed)
            pass

    def _show(self, layer, result: SegmentResult) -> None:
        labels = result.labels
        if result.computed is not None:
            previous = find_result_layer(self._viewer, LESIONS, layer.name)
            base = previous.metadata.get(PREDICTION_KEY) if previous is not None else None
            if base is not None and base.shape == labels.shape:
                labels = np.where(result.computed, labels, base).astype(np.uint8)
        show_lesions(self._viewer, layer, labels)  # what the user asked for first, the hidden maps after it
        self.status.value = f"done in {result.seconds:.1f} s"
        self.pending_layers = probability_steps(self._viewer, layer, result.probabilities)
        QTimer.singleShot(LAYER_GAP_MS, self._add_pending_layer)  # not in the lesions' turn

    def _add_pending_layer(self) -> None:
        """Add one pending result layer, then let the event loop run before the next (napari takes tens of
        milliseconds per layer on the GUI thread; all at once would freeze the viewer)."""
        if not self.pending_layers:
            return
        try:
            self.native.isVisible()
        except RuntimeError:  # the widget is gone (its viewer closed): nothing to add to
            self.pending_layers = []
            return
        self.pending_layers.pop(0)()
        QTimer.singleShot(LAYER_GAP_MS, self._add_pending_layer)

    # -- slides: deformed-downsampling models (napari_m2mrf.inference.slide, widgets.slide_layers) --

    def _run_slide(self, layer) -> None:
        """Run a slide model on the file behind ``layer`` in a worker thread: the labels appear as lazy
        layers as soon as the model has run, then the run is saved in the same worker
        (:mod:`napari_m2mrf.widgets.slide_run`; ``slide_run.stage`` and ``.timings`` tell how far it got)."""
        from napari_m2mrf.inference.slide import SlideRequest
        from napari_m2mrf.widgets.slide_run import SlideRun

        path = layer.metadata.get("source") or layer.source.path
        if not path:
            self._notify(f"{layer.name!r} has no file behind it: a slide model reads the slide file")
            return
        request = SlideRequest(model=self._model_source(), device=str(self.device.value),
                               thresholds=self._threshold_values() if self._thresholds_apply() else None)
        self.slide_run = SlideRun(self, layer, path, request)
        self.slide_run.start()
