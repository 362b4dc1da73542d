"""The demo: napari with the plugin's widgets docked, sample data loaded and the bundled models run.

The bundled fundus model segments the ``fundus_lesions`` sample and the bundled slide model (learned
deformed downsampling) the 32768² sample slide, both through the Segment widget as a user would run
them; the slide run adds its ``sampling dots`` and ``deformation map`` layers. Interactive with a
display; with ``screenshot`` set it saves a PNG of the whole window, writes a JSON summary beside it
(``<screenshot stem>_summary.json``: layers, widgets, seconds per step — opening each sample, each
model run, the total — and the longest GUI-thread stall, ``max_gui_stall_s``, with the longest in each
step), prints the summary and exits. With no display it starts a virtual one (Xvfb).

The whole run, as timed (``total``): from the call until the window shows every result and the
screenshot is written. The widgets are docked first, so PyTorch and the default model load while the
first sample is made in a worker thread; its layers are added on the GUI thread, one per event-loop
turn, once that loading is over (napari building layers beside an import gets half the GIL); each Run is
timed until its results are on screen. The slide run's save of its
full-resolution label and probability pyramids goes on in the background (interactive: it finishes
while you look). A headless run does not wait for it: ``slide.saved_s`` is recorded when the save
finished before the screenshot, otherwise the save is cancelled at exit (the workspace keeps its
previous state, never a half-written one) and ``slide.save`` says so.

Library: the virtual display is PyVirtualDisplay's (``Display(visible=False)`` starts Xvfb and sets
``$DISPLAY``), a maintained wrapper, so the package ships no X-server launcher of its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import UserError

logger = logging.getLogger(__name__)

PLUGIN = "napari-m2mrf"
DEMO_SAMPLES = ("fundus_lesions", "retina", "slide")
DEMO_WIDGETS = ("Segment lesions", "Correct lesions", "Lesion metrics")
FUNDUS_MODEL = "fundus_m2mrf_w18s"  # the bundled fundus lesion checkpoint (sample_data/checkpoints)
SLIDE_MODEL = "slide_deformed_w18s"  # the bundled deformed-downsampling slide checkpoint
SLIDE_SAMPLE_LAYER = "slide"
WINDOW_SIZE = (1800, 1100)
VIRTUAL_SCREEN = (1920, 1200)  # width, height of the virtual display (24-bit colour)
# The slide is shown beside the fundus images, scaled to this height in screen units.
SIDE_BY_SIDE_GAP = 100.0
MAX_STALLS_LISTED = 12
SMALL_LEVEL_PIXELS = 1 << 21  # a multiscale sample's levels up to this size are read before napari shows them
BACKGROUND_WAIT_S = 120.0  # the longest the samples' layers wait for PyTorch and the default model to load


@dataclass
class DemoSummary:
    """What the demo showed and how long each step took (seconds)."""

    napari_version: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    widgets: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    screenshot: str | None = None
    slide: dict[str, Any] = field(default_factory=dict)  # the slide run: labels_on_screen_s, saved_s, save
    max_gui_stall_s: float = 0.0  # the longest gap between ticks of a 10 ms timer on the GUI thread
    gui_stall_by_step_s: dict[str, float] = field(default_factory=dict)  # the longest gap in each step
    gui_stalls: list[dict[str, Any]] = field(default_factory=list)  # the longest gaps over 0.1 s: when, step, CPU

    def lines(self) -> list[str]:
        """A short human-readable summary, one item per line."""
        out = [f"napari {self.napari_version} with {PLUGIN}"]
        out += [f"  layer {layer['name']!r}: {layer['type']} {layer['shape']}" for layer in self.layers]
        out += [f"  widget {name}" for name in self.widgets]
        out += [f"  {step}: {seconds:.2f} s" for step, seconds in self.timings_s.items()]
        out += [f"  slide {key}: {value:.2f} s" if isinstance(value, float) else f"  slide {key}: {value}"
                for key, value in self.slide.items()]
        out.append(f"  longest GUI stall: {self.max_gui_stall_s:.3f} s")
        out += [f"  note: {note}" for note in self.notes]
        if self.screenshot:
            out.append(f"  screenshot: {self.screenshot}")
        return out


class _Steps:
    """Times the demo's steps into the summary and names them for the GUI stall monitor."""

    def __init__(self, summary: DemoSummary, monitor: Any) -> None:
        self.summary, self.monitor = summary, monitor

    def __call__(self, step: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        with self.monitor.step(step):
            result = work()
        self.summary.timings_s[step] = round(time.perf_counter() - start, 3)
        return result


def _layer_description(layer: Any) -> dict[str, Any]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    levels = len(layer.data) if getattr(layer, "multiscale", False) else 1
    return {
        "name": layer.name,
        "type": type(layer).__name__,
        "shape": list(data.shape),
        "levels": levels,
    }


def _placed_beside(made: list[tuple[Any, dict[str, Any], str]], height: float,
                   x_offset: float) -> list[tuple[Any, dict[str, Any], str]]:
    """The layer data of one image scaled to ``height`` units and moved right by ``x_offset``, before napari
    builds the layers (so its first look is at the place they are shown, not at a corner of level 0).
    Rescaled into the photographs' pixel frame, a slide's micrometre units no longer hold, so they are
    dropped (napari would otherwise warn that the layers' units disagree and ignore them)."""
    data, meta, _ = made[0]
    level0 = data[0] if meta.get("multiscale") else data
    scale = [float(s) for s in meta.get("scale", (1.0, 1.0))]
    factor = height / (float(level0.shape[0]) * scale[0])
    placed = []
    for data, meta, kind in made:
        layer_scale = [float(s) for s in meta.get("scale", (1.0, 1.0))]
        frame = {"scale": [factor * s for s in layer_scale], "translate": [0.0, x_offset]}
        placed.append((data, {**{k: v for k, v in meta.items() if k != "units"}, **frame}, kind))
    return placed


def _sample_layers(key: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The sample's layer data, made in a worker thread; a lazy multiscale image's small levels are read
    there too (the slide's chunks are made on first read), so napari's first look costs the GUI little."""
    from napari_m2mrf import _samples

    made = {"fundus_lesions": _samples.fundus_lesions_layers, "retina": _samples.retina_layers,
            "slide": _samples.slide_layers}[key]()
    for data, meta, _ in made:
        if meta.get("multiscale"):
            for level in data:
                if level.shape[0] * level.shape[1] <= SMALL_LEVEL_PIXELS:
                    np.asarray(level)
    return made


def _in_worker(work: Callable[[], Any], what: str) -> Any:
    """``work()`` in a worker thread while the GUI keeps running; its result, or its exception raised here."""
    from superqt.utils import create_worker

    outcome: dict[str, Any] = {}
    create_worker(work, _connect={"returned": lambda value: outcome.setdefault("value", value),
                                   "errored": lambda exc: outcome.setdefault("error", exc),
                                   "finished": lambda: outcome.setdefault("finished", True)})
    _wait_until(lambda: "finished" in outcome, what)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _add_layers(viewer: Any, made: list[tuple[Any, dict[str, Any], str]]) -> list[Any]:
    """Add the layers one per event-loop turn (napari builds each on the GUI thread)."""
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    layers = []
    for data, meta, kind in made:
        layers.append(viewer.add_layer(Layer.create(data, meta, kind)))
        QApplication.processEvents()
    return layers


def _background_loaded(segment_widget: Any) -> None:
    """Keep the GUI alive until PyTorch and the default model are loaded (or :data:`BACKGROUND_WAIT_S` passed):
    napari building layers beside an import gets half the GIL, so a 0.3 s layer blocked the viewer 0.6–1.5 s."""
    try:
        _wait_until(lambda: not segment_widget.loading, "loading PyTorch and the default model",
                    timeout_s=BACKGROUND_WAIT_S)
    except UserError as exc:
        logger.warning("%s; adding the sample layers meanwhile", exc)


def _open_samples(viewer: Any, segment_widget: Any, timed: _Steps) -> None:
    fundus_height = 0.0

    def open_sample(key: str) -> list[Any]:
        made = _in_worker(lambda: _sample_layers(key), f"opening the sample {key}")
        if key == "slide" and fundus_height:
            made = _placed_beside(made, fundus_height, fundus_height + SIDE_BY_SIDE_GAP)
        _background_loaded(segment_widget)
        return _add_layers(viewer, made)

    for key in DEMO_SAMPLES:
        layers = timed(f"open sample {key}", lambda key=key: open_sample(key))
        if key == "retina":
            # the negative control sits under the lesion image; hide it so the lesions show
            for layer in layers:
                layer.visible = False
        else:
            fundus_height = max(fundus_height, float(layers[0].data.shape[0]))


def _dock_widgets(viewer: Any, timed: _Steps) -> dict[str, Any]:
    """Dock the plugin's widgets in one tabbed dock area, the first one in front (Segment starts loading
    PyTorch and its default model in the background at once)."""
    docks, widgets = [], {}
    for index, name in enumerate(DEMO_WIDGETS):
        dock, widgets[name] = timed(
            f"dock {name}",
            lambda name=name, tabify=index > 0: viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=tabify),
        )
        docks.append(dock)
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    docks[0].raise_()
    return widgets


def _save_screenshot(viewer: Any, path: Path) -> None:
    """The whole window grabbed on the GUI thread, written as a PNG in a worker thread (encoding the
    1800×1100 PNG took the GUI thread 0.14 s of CPU)."""
    from PIL import Image

    pixels = viewer.screenshot(canvas_only=False)
    _in_worker(lambda: Image.fromarray(pixels).save(path), "writing the screenshot")


def _wait_until(done: Callable[[], bool], what: str, timeout_s: float = 600.0) -> None:
    """Keep the GUI alive until ``done()``; ``UserError`` naming ``what`` after ``timeout_s``."""
    from qtpy.QtWidgets import QApplication

    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            raise UserError(f"{what} took longer than {timeout_s:.0f} s")
        QApplication.processEvents()
        time.sleep(0.01)


def _wait_for(worker: Any) -> None:
    """Keep the GUI alive until a widget's worker finishes."""
    finished: list[bool] = []
    worker.finished.connect(lambda: finished.append(True))
    _wait_until(lambda: bool(finished), "the demo's model run")


def _segment_with(segment_widget: Any, image: Any, model: str, timed: _Steps,
                  on_screen: Callable[[], bool]) -> bool:
    """Run the bundled ``model`` through the Segment widget on ``image``; time Run → ``on_screen()`` (the
    first results) and Run → every result layer. False (and a note) when the model is missing."""
    from napari_m2mrf.catalog import bundled_models

    summary = timed.summary
    if model not in bundled_models():
        summary.notes.append(f"bundled model {model} not found: segmentation of {image.name} skipped")
        return False
    if not segment_widget.ready:
        timed("load PyTorch (off the GUI thread)",
              lambda: _wait_until(lambda: segment_widget.ready, "loading PyTorch", timeout_s=120.0))
    segment_widget.image.value = image
    segment_widget.model.value = model
    step = f"segment {image.name} with {model}"
    started = time.perf_counter()

    def run() -> None:
        segment_widget.run()
        _wait_until(on_screen, f"{step}: results on screen")
        summary.timings_s[f"{step}: first results on screen"] = round(time.perf_counter() - started, 3)
        _wait_until(lambda: _results_shown(segment_widget), f"{step}: every result layer")

    timed(step, run)
    return True


def _results_shown(segment_widget: Any) -> bool:
    """Every result layer of the widget's last run is on screen (a slide run's save may go on)."""
    run = getattr(segment_widget, "slide_run", None)
    if run is not None and run.layer is segment_widget.image.value:
        return run.layers_shown
    return segment_widget.run_button.enabled and not segment_widget.pending_layers


def _segment_fundus(viewer: Any, segment_widget: Any, timed: _Steps) -> None:
    """The bundled fundus model on the lesion sample."""
    image = next(layer for layer in viewer.layers if layer.name.startswith("fundus_lesions") and layer.rgb)
    _segment_with(segment_widget, image, FUNDUS_MODEL, timed,
                  lambda: any(layer.name == "lesions" for layer in viewer.layers))


def _segment_slide(viewer: Any, segment_widget: Any, timed: _Steps) -> None:
    """The bundled slide model on the sample slide; its deformation map is shown under the sampling dots."""
    from napari_m2mrf.widgets.slide_layers import DEFORMATION

    image = next(layer for layer in viewer.layers if layer.name == SLIDE_SAMPLE_LAYER and layer.multiscale)
    if not _segment_with(segment_widget, image, SLIDE_MODEL, timed,
                         lambda: "labels_on_screen_s" in segment_widget.slide_run.timings):
        return
    for layer in viewer.layers:
        if layer.name == DEFORMATION:
            layer.visible = True


def _record_slide_save(segment_widget: Any, summary: DemoSummary, *, at_exit: bool) -> None:
    """The slide run's two moments (seconds after Run) and what became of its background save."""
    run = getattr(segment_widget, "slide_run", None)
    if run is None:
        return
    summary.slide = {key: run.timings[key] for key in ("labels_on_screen_s", "saved_s") if key in run.timings}
    if "saved_s" in run.timings:
        summary.slide["save"] = "saved"
    elif at_exit:
        summary.slide["save"] = "cancelled at exit (not waited for; the workspace keeps its previous state)"
    else:
        summary.slide["save"] = "running in the background"


def _close_and_cancel(viewer: Any, segment_widget: Any | None) -> None:
    """Close the viewer (a running slide save is cancelled) and wait, briefly, for the worker to stop."""
    worker = getattr(segment_widget, "worker", None) if segment_widget is not None else None
    viewer.close()
    if worker is not None:
        try:
            _wait_until(lambda: not worker.is_running, "cancelling the slide save", timeout_s=60.0)
        except (UserError, RuntimeError):
            logger.warning("the slide save did not stop within a minute of the viewer closing")


@contextmanager
def display_available() -> Iterator[None]:
    """Use the user's display (``$DISPLAY``/``$WAYLAND_DISPLAY``), or a private Xvfb while inside.

    napari renders with OpenGL and Qt's ``offscreen`` platform has no OpenGL context for vispy, so a
    headless run needs an X server. Raises ``UserError`` saying what to install when there is neither
    a display nor Xvfb.
    """
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        yield
        return
    if shutil.which("Xvfb") is None:
        raise UserError(
            "no display and no Xvfb: install a virtual display (as root: apt-get install xvfb libgl1-mesa-dri) "
            "or run with a display"
        )
    from pyvirtualdisplay import Display

    # ``-terminate``: Xvfb ends by itself when its last client disconnects. Qt keeps its X connection
    # until the process ends, and stopping the server under it crashes the process at exit (XIO error),
    # so once Qt has connected the server is left to end with Qt's connection instead of being stopped.
    display = Display(visible=False, size=VIRTUAL_SCREEN, color_depth=24, extra_args=["-terminate"]).start()
    logger.info("no display: started a virtual one (Xvfb) on :%s", display.display)
    try:
        yield
    finally:
        if not _qt_connected():
            display.stop()


def _qt_connected() -> bool:
    """Whether a Qt application (and so an X connection) exists in this process."""
    widgets = sys.modules.get("qtpy.QtWidgets")
    return widgets is not None and widgets.QApplication.instance() is not None


def run_demo(screenshot: Path | None = None) -> DemoSummary:
    """Open napari with the plugin and its samples; save a screenshot and return a summary when asked."""
    if screenshot is not None:
        screenshot = screenshot.expanduser().resolve()
        if not screenshot.parent.is_dir():
            raise UserError(f"folder for the screenshot does not exist: {screenshot.parent}")
    summary = DemoSummary()
    started = time.perf_counter()
    with display_available():
        import napari
        from qtpy.QtWidgets import QApplication

        from napari_m2mrf.widgets.stall_monitor import StallMonitor

        summary.napari_version = napari.__version__
        start = time.perf_counter()
        viewer = napari.Viewer(title="napari-m2mrf demo", show=True)
        summary.timings_s["start napari"] = round(time.perf_counter() - start, 3)
        viewer.window.resize(*WINDOW_SIZE)
        monitor = StallMonitor().start()  # from the first moment a user could touch the window
        timed = _Steps(summary, monitor)
        segment = None
        try:
            docked = _dock_widgets(viewer, timed)
            segment = docked["Segment lesions"]
            _open_samples(viewer, segment, timed)
            _segment_fundus(viewer, segment, timed)
            _segment_slide(viewer, segment, timed)
            QApplication.processEvents()
            viewer.reset_view()
            summary.widgets = sorted(viewer.window.dock_widgets)
            summary.layers = [_layer_description(layer) for layer in viewer.layers]
            if screenshot is None:
                monitor.stop()
                napari.run()
                return summary
            QApplication.processEvents()
            timed("screenshot", lambda: _save_screenshot(viewer, screenshot))
            summary.screenshot = str(screenshot)
            summary.timings_s["total"] = round(time.perf_counter() - started, 3)
            monitor.stop()
            summary.max_gui_stall_s = round(monitor.max_stall_s, 3)
            summary.gui_stall_by_step_s = {step: round(gap, 3) for step, gap in monitor.max_by_step.items()}
            longest = sorted(monitor.stalls, key=lambda stall: -stall.seconds)[:MAX_STALLS_LISTED]
            summary.gui_stalls = [asdict(stall) for stall in sorted(longest, key=lambda stall: stall.at_s)]
            _record_slide_save(segment, summary, at_exit=False)
        finally:
            if screenshot is not None:
                _close_and_cancel(viewer, segment)
    _record_slide_save(segment, summary, at_exit=True)
    summary_path = screenshot.with_name(f"{screenshot.stem}_summary.json")
    summary_path.write_text(json.dumps(asdict(summary), indent=2))
    return summary
