"""Run in a fresh interpreter: dock the demo's three widgets in a viewer as the demo does, then keep the event
loop running until the Segment widget has PyTorch; report, as JSON on stdout, which of the heavy modules
were imported while docking and, for each, on which thread and when its import started. Used by
``test_gui_warm_up.py``."""

import json
import sys
import threading
import time

import numpy as np

WATCHED = ("torch", "pandas", "scipy.ndimage")


class _ImportRecorder:
    """A meta-path finder that finds nothing: it notes the first import of each watched module."""

    def __init__(self) -> None:
        self.started: dict[str, dict] = {}

    def find_spec(self, name, path=None, target=None):
        if name in WATCHED and name not in self.started:
            self.started[name] = {"gui_thread": threading.current_thread() is threading.main_thread(),
                                  "at": time.perf_counter()}
        return None


def main() -> None:
    recorder = _ImportRecorder()
    sys.meta_path.insert(0, recorder)
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_m2mrf.demo import DEMO_WIDGETS, PLUGIN

    viewer = napari.Viewer(show=False)
    before = [name for name in WATCHED if name in sys.modules]
    widgets = [viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)[1] for name in DEMO_WIDGETS]
    while_docking = [name for name in WATCHED if name in sys.modules]
    docked = time.perf_counter()
    deadline = docked + 120
    while not widgets[0].ready and time.perf_counter() < deadline:
        QApplication.processEvents()
        time.sleep(0.005)
    pint = sys.modules["pint"]  # napari's units library (napari imports it; not a dependency of the plugin)
    registry_built = type(pint.get_application_registry().get()).__name__ != "LazyRegistry"
    image = viewer.add_image(np.zeros((2, 2)))  # napari's units come from the registry installed by the warm-up
    print(json.dumps({
        "before": before,
        "while_docking": while_docking,
        "ready": widgets[0].ready,
        "imports": {name: {"gui_thread": started["gui_thread"], "after_docking_s": started["at"] - docked}
                    for name, started in recorder.started.items()},
        "registry_built": registry_built,
        "units": [str(unit) for unit in image.units],
    }))
    viewer.close()


if __name__ == "__main__":
    main()
