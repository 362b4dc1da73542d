"""The demo: napari with the plugin's widgets docked, sample data loaded and the bundled models run.

Interactive with a display; with ``screenshot`` set it saves a PNG of the whole window, writes a JSON
summary beside it (``<screenshot stem>_summary.json``), prints the summary and exits. With no display
it starts a virtual one (Xvfb).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_m2mrf.display import display_available
from napari_m2mrf.errors import UserError

PLUGIN = "napari-m2mrf"
DEMO_SAMPLES = ("fundus_lesions", "retina", "slide")
# The slide is shown beside the fundus images, scaled to this height in screen units.
SIDE_BY_SIDE_GAP = 100.0


@dataclass
class DemoSummary:
    """What the demo showed and how long each step took (seconds)."""

    napari_version: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    widgets: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    screenshot: str | None = None

    def lines(self) -> list[str]:
        """A short human-readable summary, one item per line."""
        out = [f"napari {self.napari_version} with {PLUGIN}"]
        out += [f"  layer {layer['name']!r}: {layer['type']} {layer['shape']}" for layer in self.layers]
        out += [f"  widget {name}" for name in self.widgets]
        out += [f"  {step}: {seconds:.2f} s" for step, seconds in self.timings_s.items()]
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
    factor = height / float(level0.shape[0])
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


def run_demo(screenshot: Path | None = None) -> DemoSummary:
    """Open napari with the plugin and its samples; save a screenshot and return a summary when asked."""
    if screenshot is not None:
        screenshot = screenshot.expanduser().resolve()
        if not screenshot.parent.is_dir():
            raise UserError(f"folder for the screenshot does not exist: {screenshot.parent}")
    summary = DemoSummary()
    with display_available():
        import napari
        from qtpy.QtWidgets import QApplication

        summary.napari_version = napari.__version__
        viewer = _timed(summary, "start napari", lambda: napari.Viewer(title="napari-m2mrf demo", show=True))
        try:
            _open_samples(viewer, summary)
            viewer.reset_view()
            summary.widgets = sorted(viewer.window.dock_widgets)
            summary.layers = [_layer_description(layer) for layer in viewer.layers]
            if screenshot is None:
                napari.run()
                return summary
            QApplication.processEvents()
            _timed(summary, "screenshot", lambda: viewer.screenshot(str(screenshot), canvas_only=False))
            summary.screenshot = str(screenshot)
        finally:
            if screenshot is not None:
                viewer.close()
    summary_path = screenshot.with_name(f"{screenshot.stem}_summary.json")
    summary_path.write_text(json.dumps(asdict(summary), indent=2))
    return summary
