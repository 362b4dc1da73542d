"""Run in a fresh interpreter (torch not yet imported): open one of the plugin's widgets in a viewer
and report, as JSON on stdout, what it showed at once and how long the event loop was blocked until
PyTorch had loaded off the GUI thread. Used by ``test_gui_deferred_import.py``."""

import json
import sys
import time

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

WIDGETS = {"Segment lesions": ("run_button", "run"), "Train lesion model": ("start_button", "start")}


def main(name: str) -> None:
    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    torch_before = "torch" in sys.modules
    _, widget = viewer.window.add_plugin_dock_widget("napari-m2mrf", name)
    button_name, action = WIDGETS[name]
    button = getattr(widget, button_name)
    at_once = {"button_enabled": button.enabled, "status": str(widget.status.value), "model": str(widget.model.value)}
    getattr(widget, action)()  # run/start called before torch is in: a message, not a crash or a frozen GUI
    at_once["status_after_early_call"] = str(widget.status.value)
    ticks = [time.perf_counter()]
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    deadline = time.perf_counter() + 120
    while not button.enabled and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.002)
    ticks.append(time.perf_counter())
    timer.stop()
    print(json.dumps({
        "torch_before": torch_before,
        "at_once": at_once,
        "loaded": button.enabled,
        "load_seconds": ticks[-1] - ticks[0],
        "longest_stall": float(np.diff(ticks).max()),
        "models": [str(choice) for choice in widget.model.choices],
        "devices": [str(choice) for choice in widget.device.choices],
    }))
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1])
