"""A slide run in the Segment widget: labels on screen as soon as the model has run, saved in the background.

One worker thread (superqt, not registered with napari's task list) runs
:func:`~napari_m2mrf.inference.slide.run_slide_segmentation`. When the model has run on the deformed
samples (seconds) the job hands its *lazy* result to the GUI thread (a queued signal) and goes on to
save it into the workspace. The GUI thread shows at once:

* ``prediction``: a multiscale Labels layer whose levels are
  :class:`~napari_m2mrf.sampling.reverse.ReverseFilledLevel` views — napari asks for the region in
  view at the level that matches the zoom, and only that region is reverse-filled (a coarse level
  from the samples at its own resolution);
* the hidden per-class probability layers, lazy the same way; the deformation map, the deformed
  image and the sampling dots (all small).

The layers are added one per turn of the event loop, so the GUI never waits for all of them at once.
The label layer is tagged ``saved: False`` and the run's id while the save goes on; the progress bar
and status line follow the save (honest: blocks of every level, counted in pixels), and Cancel stops
it within a block with the workspace as it was (the new pyramids are written aside and published in
one rename). When the save is done the label and probability layers switch to the stored zarr
pyramids (the same values, level by level) and are tagged ``saved: True``. A cancelled save leaves
the lazy layers on screen, tagged not saved, and says so. Closing the widget (the viewer) cancels the
run, so nothing half-written is ever published.

The Edit slide region widget works throughout: during the save it copies the region from the lazy
layer, and its write-back waits for the save to publish (the workspace lock) before writing.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from napari_m2mrf.errors import UserError
from napari_m2mrf.jobs import Cancelled, CancelToken

RUNNING = "running"  # the model is running; nothing on screen yet
SHOWN = "saving"  # lazy layers on screen, the save goes on in the worker
SAVED = "saved"  # the layers show the stored pyramids
CANCELLED = "cancelled"
FAILED = "failed"
STEP_GAP_MS = 20
SAVE_WAIT_S = 30.0  # the longest the save waits for the lazy layers to be on screen


class SlideRun(QObject):
    """One run: starts the worker, shows the lazy result, then the saved one.

    ``stage`` is one of :data:`RUNNING`, :data:`SHOWN`, :data:`SAVED`, :data:`CANCELLED`, :data:`FAILED`;
    ``timings`` holds ``labels_on_screen_s`` and ``saved_s`` (seconds after Run).
    """

    ready = Signal(object)

    def __init__(self, widget: Any, layer: Any, path: str, request: Any) -> None:
        super().__init__()
        self.widget, self.layer, self.path, self.request = widget, layer, str(path), request
        self.stage = RUNNING
        self.timings: dict[str, float] = {}
        self.result: Any = None
        self.cancel = CancelToken()
        self.started = 0.0
        self.layer_work: list[tuple[float, float]] = []  # (start, end) perf_counter s of each step that adds or
        # switches layers on the GUI thread (napari's own layer creation costs 0.1-0.5 s each on software OpenGL)
        self.ready.connect(self._show_lazy)  # emitted in the worker: queued to the GUI thread
        self._on_screen = threading.Event()  # every lazy layer is on screen: the save may start

    def start(self) -> None:
        from superqt.utils import create_worker

        from napari_m2mrf.inference.slide import run_slide_segmentation

        widget = self.widget
        widget._cancel = self.cancel
        signals = widget._signals
        widget.worker = create_worker(
            functools.partial(run_slide_segmentation, on_result=self._handed_out),
            self.path,
            self.request,
            progress=lambda done, total, message: signals.progressed.emit(done, total, message),
            cancel=self.cancel,
            notify=signals.noticed.emit,
            _start_thread=False,
            _connect={"returned": self._saved, "errored": self._failed, "finished": widget._on_finished},
        )
        widget.native.destroyed.connect(self.cancel.set)  # the viewer closes: nothing half-saved is published
        widget.run_button.enabled, widget.cancel_button.enabled = False, True
        widget.progress.value = 0
        widget.status.value = f"running {self.request.model} on the slide {self.layer.name}…"
        self.started = time.perf_counter()
        widget.worker.start()

    def _handed_out(self, result: Any) -> None:
        """In the worker: the lazy result goes to the GUI thread; the save that follows runs at a lower
        CPU priority (Linux: per-thread nice 10, inherited by the fill threads it starts), so the viewer
        keeps answering on a machine with few cores. The model part before runs at the normal
        priority: the user waits for it, and a niced thread starved by other busy processes would
        also hold the GIL the GUI thread needs. The save starts once the lazy layers are on screen (at
        most :data:`SAVE_WAIT_S` later, or at a cancel): beside it napari's 0.2–0.3 s of CPU per layer took
        0.5–0.8 s (the GIL shared with the save's fill threads)."""
        from napari_m2mrf.widgets.segment import BACKGROUND_NICENESS

        self.ready.emit(result)
        deadline = time.perf_counter() + SAVE_WAIT_S
        while not self._on_screen.wait(0.05) and not self.cancel.is_set and time.perf_counter() < deadline:
            pass
        if hasattr(os, "setpriority"):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)

    @property
    def viewer(self) -> Any:
        return self.widget._viewer

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def _show_lazy(self, result: Any) -> None:
        """The lazy result: labels now, the other layers one per event-loop turn."""
        from napari_m2mrf.widgets import slide_layers

        if self.stage != RUNNING:
            self._on_screen.set()
            return
        self.result = result
        slide_layers.remember_run(self.layer, result)
        self._timed(lambda: slide_layers.show_lazy_labels(self.viewer, self.layer, result))
        self.stage = SHOWN
        self.timings["labels_on_screen_s"] = self._elapsed()
        self.widget.status.value = (f"labels on screen after {self.timings['labels_on_screen_s']:.1f} s "
                                    "(computed where you look); saving to the workspace…")
        from napari_m2mrf.widgets.result_layers import remove_other_probabilities

        steps = [
            lambda: remove_other_probabilities(self.viewer, self.layer.name, result.probability_codes),
            *[lambda code=code: slide_layers.show_lazy_probability(self.viewer, self.layer, result, code)
              for code in result.probability_codes],
            lambda: slide_layers.show_deformation_map(self.viewer, self.layer, result.density,
                                                      result.density_downsample),
            lambda: slide_layers.show_deformed_image(self.viewer, self.layer, result.deformed_image,
                                                     result.image_shape),
            lambda: slide_layers.show_sampling_dots(self.viewer, self.layer, result.points, result.relative_density),
        ]
        self._pending = steps
        self._next_step()

    def _timed(self, step) -> Any:
        start = time.perf_counter()
        try:
            return step()
        finally:
            self.layer_work.append((start, time.perf_counter()))

    def _next_step(self) -> None:
        if self._pending:
            self._timed(self._pending.pop(0))
            QTimer.singleShot(STEP_GAP_MS, self._next_step)  # let the event loop run between layers
        else:
            self._on_screen.set()

    @property
    def layers_shown(self) -> bool:
        """Every layer of the lazy result is on screen (the save may go on)."""
        return self.stage != RUNNING and not getattr(self, "_pending", None)

    def _finish_pending(self) -> None:
        while getattr(self, "_pending", None):
            self._timed(self._pending.pop(0))
        self._on_screen.set()

    def _saved(self, result: Any) -> None:
        """Saved: the label and probability layers switch to the stored pyramids (equal values)."""
        from napari_m2mrf.widgets import slide_layers

        if self.stage == RUNNING:
            self._show_lazy(result)
        self._finish_pending()
        self._timed(lambda: slide_layers.show_probability_pyramids(self.viewer, self.layer, result.workspace,
                                                                   result.meta["classes"]))
        self._timed(lambda: slide_layers.show_saved_labels(self.viewer, self.layer, result))
        self.stage = SAVED
        self.timings["saved_s"] = self._elapsed()
        dots = slide_layers._find(self.viewer, slide_layers.DOTS, self.layer.name)
        shown = dots.metadata["m2mrf"].get("shown", "") if dots is not None else ""
        self.widget.status.value = (f"done in {self.timings['saved_s']:.1f} s (labels on screen after "
                                    f"{self.timings['labels_on_screen_s']:.1f} s); {shown}")

    def _failed(self, exc: Exception) -> None:
        if self.stage == SHOWN:
            self._finish_pending()
            self.stage = CANCELLED if isinstance(exc, Cancelled) else FAILED
            why = "cancelled" if isinstance(exc, Cancelled) else f"failed ({exc})"
            self.widget._notify(f"saving {why}: the labels on screen are not saved; the workspace keeps the "
                                "previous run (run again to save)")
            if not isinstance(exc, (Cancelled, UserError)):
                self.widget._on_error(exc)
            return
        self.stage = CANCELLED if isinstance(exc, Cancelled) else FAILED
        self.widget._on_error(exc)
