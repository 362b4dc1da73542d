"""The demo: napari with the plugin's widgets docked, sample data loaded and the bundled models run.

The bundled fundus model segments the ``fundus_lesions`` sample and the bundled slide model (learned
deformed downsampling) the 32768² sample slide, both through the Segment widget as a user would run
them; the slide run adds its ``sampling dots`` and ``deformation map`` layers. Interactive with a
display; with ``screenshot`` set it saves a PNG of the whole window, writes a JSON summary beside it
(``<screenshot stem>_summary.json``: layers, widgets, seconds per step — opening each sample, each
model run, the total), prints the summary and exits. With no display it starts a virtual one (Xvfb).

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


@dataclass
class DemoSummary:
    """What the demo showed and how long each step took (seconds)."""

    napari_version: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    widgets: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    screenshot: str | None = None
    slide: dict[str, float] = field(default_factory=dict)  # the slide run: labels_on_screen_s, saved_s (after Run)

    def lines(self) -> list[str]:
        """A short human-readable summary, one item per line."""
        out = [f"napari {self.napari_version} with {PLUGIN}"]
        out += [f"  layer {layer['name']!r}: {layer['type']} {layer['shape']}" for layer in self.layers]
        out += [f"  widget {name}" for name in self.widgets]
        out += [f"  {step}: {seconds:.2f} s" for step, seconds in self.timings_s.items()]
        out += [f"  slide {key}: {seconds:.2f} s" for key, seconds in self.slide.items()]
        out += [f"  note: {note}" for note in self.notes]
        if self.screenshot:
            out.append(f"  screenshot: {self.screenshot}")
        return out


def _timed(summary: DemoSummary, step: str, work: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = work()
    summary.timings_s[step] = round(time.perf_counter() - start, 3)
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


def _place_beside(layers: list[Any], height: float, x_offset: float) -> None:
    """Scale ``layers`` (all of one image) to ``height`` units and move them right by ``x_offset``."""
    level0 = layers[0].data[0] if layers[0].multiscale else layers[0].data
    factor = height / (float(level0.shape[0]) * float(layers[0].scale[0]))
    for layer in layers:
        layer.scale = [factor * s for s in layer.scale]
        layer.translate = [0.0, x_offset]


def _open_samples(viewer: Any, summary: DemoSummary) -> None:
    fundus_height = 0.0
    for key in DEMO_SAMPLES:
        layers = _timed(summary, f"open sample {key}", lambda key=key: viewer.open_sample(PLUGIN, key))
        if key == "slide" and fundus_height:
            _place_beside(layers, fundus_height, fundus_height + SIDE_BY_SIDE_GAP)
        elif key == "retina":
            # the negative control sits under the lesion image; hide it so the lesions show
            for layer in layers:
                layer.visible = False
        else:
            fundus_height = max(fundus_height, float(layers[0].data.shape[0]))


def _dock_widgets(viewer: Any, summary: DemoSummary) -> dict[str, Any]:
    """Dock the plugin's widgets in one tabbed dock area, the first one in front."""
    docks, widgets = [], {}
    for index, name in enumerate(DEMO_WIDGETS):
        dock, widgets[name] = _timed(
            summary,
            f"dock {name}",
            lambda name=name, tabify=index > 0: viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=tabify),
        )
        docks.append(dock)
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    docks[0].raise_()
    return widgets


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


def _segment_with(segment_widget: Any, image: Any, model: str, summary: DemoSummary) -> None:
    """Run the bundled ``model`` through the Segment widget on ``image`` and time it; a missing model is noted."""
    from napari_m2mrf.catalog import bundled_models

    if model not in bundled_models():
        summary.notes.append(f"bundled model {model} not found: segmentation of {image.name} skipped")
        return
    if not segment_widget.ready:
        _timed(summary, "load PyTorch (off the GUI thread)",
               lambda: _wait_until(lambda: segment_widget.ready, "loading PyTorch", timeout_s=120.0))
    segment_widget.image.value = image
    segment_widget.model.value = model

    def run() -> None:
        segment_widget.run()
        _wait_for(segment_widget.worker)

    _timed(summary, f"segment {image.name} with {model}", run)


def _segment_fundus(viewer: Any, segment_widget: Any, summary: DemoSummary) -> None:
    """The bundled fundus model on the lesion sample."""
    image = next(layer for layer in viewer.layers if layer.name.startswith("fundus_lesions") and layer.rgb)
    _segment_with(segment_widget, image, FUNDUS_MODEL, summary)


def _segment_slide(viewer: Any, segment_widget: Any, summary: DemoSummary) -> None:
    """The bundled slide model on the sample slide; its deformation map is shown under the sampling dots."""
    from napari_m2mrf.widgets.slide_layers import DEFORMATION

    image = next(layer for layer in viewer.layers if layer.name == SLIDE_SAMPLE_LAYER and layer.multiscale)
    _segment_with(segment_widget, image, SLIDE_MODEL, summary)
    run = getattr(segment_widget, "slide_run", None)
    if run is not None:  # the labels appear lazily before the run is saved: both moments, seconds after Run
        summary.slide = {key: run.timings[key] for key in ("labels_on_screen_s", "saved_s") if key in run.timings}
    for layer in viewer.layers:
        if layer.name == DEFORMATION:
            layer.visible = True


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

        summary.napari_version = napari.__version__
        viewer = _timed(summary, "start napari", lambda: napari.Viewer(title="napari-m2mrf demo", show=True))
        viewer.window.resize(*WINDOW_SIZE)
        try:
            _open_samples(viewer, summary)
            docked = _dock_widgets(viewer, summary)
            _segment_fundus(viewer, docked["Segment lesions"], summary)
            _segment_slide(viewer, docked["Segment lesions"], summary)
            QApplication.processEvents()
            viewer.reset_view()
            summary.widgets = sorted(viewer.window.dock_widgets)
            summary.layers = [_layer_description(layer) for layer in viewer.layers]
            if screenshot is None:
                napari.run()
                return summary
            QApplication.processEvents()
            _timed(summary, "screenshot", lambda: viewer.screenshot(str(screenshot), canvas_only=False))
            summary.screenshot = str(screenshot)
            summary.timings_s["total"] = round(time.perf_counter() - started, 3)
        finally:
            if screenshot is not None:
                viewer.close()
    summary_path = screenshot.with_name(f"{screenshot.stem}_summary.json")
    summary_path.write_text(json.dumps(asdict(summary), indent=2))
    return summary
