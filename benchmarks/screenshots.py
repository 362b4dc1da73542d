"""Screenshots of each plugin widget for the README: ``python -m benchmarks.screenshots OUT_DIR``
(``scripts/screenshots.sh`` writes them into ``docs/screenshots/``).

Opens a real napari viewer (with no display, on a private Xvfb through ``napari_m2mrf.demo``'s
``display_available``, which uses PyVirtualDisplay), loads the ``fundus_lesions`` sample as File ▸ Open
Sample does, docks every widget from the plugin manifest, runs the bundled fundus model through the
Segment widget, scores it in Lesion metrics, reviews it in Lesion inventory, and saves one PNG per dock
widget (``QWidget.grab``) plus one of the whole window. Images are reduced to a 256-colour palette
(Pillow) so each stays small. The slide sample is not opened (generating it takes minutes): the
Edit slide region widget is shown as it docks.

Prints one line per file written; exit status 1 when a step fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLUGIN = "napari-m2mrf"
SAMPLE = "fundus_lesions"
FUNDUS_MODEL = "fundus_m2mrf_w18s"
WINDOW_SIZE = (1500, 950)
WINDOW_WIDTH_PX = 1000  # the whole-window screenshot is scaled to this width
# dock title -> PNG file name (without .png), in the order they are docked
WIDGETS = {
    "Segment lesions": "segment",
    "Correct lesions": "correct",
    "Lesion metrics": "metrics",
    "Lesion inventory": "inventory",
    "Train lesion model": "train",
    "Edit slide region": "slide_edit",
}
WINDOW = "window"


def _process(seconds: float = 0.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while True:
        QApplication.processEvents()
        if time.perf_counter() >= end:
            return
        time.sleep(0.01)


def _wait_until(done: Callable[[], bool], what: str, timeout_s: float = 600.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what} took longer than {timeout_s:.0f} s")
        _process(0.02)


def _save(image: Any, path: Path, width: int | None = None) -> Path:
    """A ``QImage`` as a palette PNG (and scaled to ``width`` when given)."""
    from PIL import Image
    from qtpy.QtCore import QBuffer, QIODevice, Qt

    if width is not None and image.width() > width:
        image = image.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.ReadWrite)
    image.save(buffer, "PNG")
    import io

    picture = _trim_bottom(Image.open(io.BytesIO(bytes(buffer.data()))).convert("RGB"))
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _trim_bottom(picture: Any, margin: int = 10) -> Any:
    """``picture`` without the empty dock background below the widget's last control."""
    import numpy as np

    pixels = np.asarray(picture).astype(np.int16)
    background = pixels[-1, pixels.shape[1] // 2]
    busy = (np.abs(pixels - background).sum(axis=2) > 24).sum(axis=1) > 4
    rows = np.flatnonzero(busy[:-1])
    if rows.size == 0:
        return picture
    return picture.crop((0, 0, picture.width, min(picture.height, int(rows[-1]) + 1 + margin)))


def _segment(viewer: Any, widget: Any, image: Any) -> None:
    from napari_m2mrf.catalog import bundled_models

    _wait_until(lambda: widget.ready, "loading PyTorch", timeout_s=600.0)
    if FUNDUS_MODEL not in bundled_models():
        raise RuntimeError(f"bundled model {FUNDUS_MODEL} not found")
    widget.image.value = image
    widget.model.value = FUNDUS_MODEL
    widget.run()
    _wait_until(lambda: widget.run_button.enabled and not widget.pending_layers and _lesions_layer(viewer) is not None,
                "the fundus segmentation and every result layer")
    _process(0.2)


def _lesions_layer(viewer: Any) -> Any | None:
    return next((layer for layer in viewer.layers if layer.metadata.get("m2mrf", {}).get("role") == "lesions"), None)


def take_screenshots(out: Path) -> list[Path]:
    """Open napari, run the widgets on the fundus sample and write the PNGs into ``out``."""
    from napari_m2mrf.demo import display_available

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with display_available():
        import napari

        viewer = napari.Viewer(title="napari-m2mrf", show=True)
        try:
            viewer.window.resize(*WINDOW_SIZE)
            layers = viewer.open_sample(PLUGIN, SAMPLE)
            image = next(layer for layer in layers if getattr(layer, "rgb", False))
            truth = next(layer for layer in layers if layer.name.endswith("ground truth"))
            docks, widgets = {}, {}
            for index, title in enumerate(WIDGETS):
                docks[title], widgets[title] = viewer.window.add_plugin_dock_widget(PLUGIN, title, tabify=index > 0)
            _process(0.3)

            _segment(viewer, widgets["Segment lesions"], image)
            lesions = _lesions_layer(viewer)
            truth.visible = False

            correct = widgets["Correct lesions"]
            correct.reset_choices()
            correct.layer.value = lesions

            metrics = widgets["Lesion metrics"]
            metrics.reset_choices()
            metrics.prediction.value = next(c for c in metrics.prediction.choices if c.startswith("probabilities of "))
            metrics.ground_truth.value = truth.name
            metrics.compute()
            _wait_until(lambda: getattr(metrics, "last_metrics", None) is not None, "the metrics")

            inventory = widgets["Lesion inventory"]
            inventory.reset_choices()
            inventory.layer.value = lesions
            _wait_until(lambda: not inventory.busy and inventory.inventory is not None, "the lesion inventory")
            inventory.pixel_size.value = 6.0  # about a fundus camera's pixel (e.g. IDRiD's 4288 px over ~25 mm)
            _wait_until(lambda: not inventory.busy and inventory.inventory.pixel_size is not None, "the inventory update")

            train = widgets["Train lesion model"]
            _wait_until(lambda: train.ready, "the Train widget", timeout_s=600.0)
            train.reset_choices()

            for title, stem in WIDGETS.items():
                docks[title].raise_()
                _process(0.3)
                written.append(_save(docks[title].grab().toImage(), out / f"{stem}.png"))
                print(written[-1], flush=True)

            docks["Lesion inventory"].raise_()
            from qtpy.QtCore import Qt

            from napari_m2mrf.widgets.inventory import AREA_PX_COLUMN

            inventory.table.sortByColumn(AREA_PX_COLUMN, Qt.SortOrder.DescendingOrder)
            viewer.reset_view()
            _process(0.5)
            window = viewer.screenshot(canvas_only=False, flash=False)  # (H, W, 4) uint8
            written.append(_save_array(window, out / f"{WINDOW}.png"))
            print(written[-1], flush=True)
        finally:
            from qtpy.QtCore import QThreadPool

            QThreadPool.globalInstance().waitForDone(30_000)  # no worker (inventory, preload) may outlive the viewer
            viewer.close()
    return written


def _save_array(rgba: Any, path: Path) -> Path:
    from PIL import Image

    picture = Image.fromarray(rgba[..., :3])
    if picture.width > WINDOW_WIDTH_PX:
        picture = picture.resize((WINDOW_WIDTH_PX, round(picture.height * WINDOW_WIDTH_PX / picture.width)),
                                 Image.Resampling.LANCZOS)
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/screenshots"), help="folder for the PNGs")
    args = parser.parse_args(argv)
    try:
        take_screenshots(args.out)
    except Exception as exc:  # one line, not a Qt traceback
        print(f"screenshots failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
