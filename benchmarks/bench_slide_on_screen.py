"""Run → labels on screen on the 32768² sample slide in a real napari viewer, and how long the GUI stalls.

napari (under Xvfb when there is no display) opens the cached sample slide (``sample_data.slide_sample``,
32768², 7 levels, OME-Zarr) as the plugin's reader does, docks the Segment widget and runs the bundled
slide model (``slide_deformed_w18s``, default settings) as a user would. A 10 ms ``QTimer`` ticks on the
GUI thread from Run until the run is saved; a gap between ticks is how long the event loop was blocked.
Reported: seconds from Run to the lazy label layer on screen and to the saved workspace, the longest
stall outside the layer steps (napari creating or switching a layer, and its first draw), the longest
stall overall, each layer step, and the load average before and after.

Run: ``xvfb-run -a .venv/bin/python benchmarks/bench_slide_on_screen.py [--runs 2]`` (the second run
replaces the layers of the first, as a user running again would).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import napari
    import numpy as np
    from gui_timing import event_loop_ticks, wait_until_ready
    from qtpy.QtWidgets import QApplication

    from napari_m2mrf.widgets.segment import SegmentWidget
    from sample_data.slide_sample import sample_slide

    slide = sample_slide()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1100)
    viewer.open(str(slide.ome_zarr), plugin="napari-m2mrf")
    widget = wait_until_ready(SegmentWidget(viewer))
    viewer.window.add_dock_widget(widget, name="Segment lesions")
    widget.image.value = viewer.layers["slide"]
    widget.model.value = "slide_deformed_w18s"
    widget.device.value = "cpu"
    QApplication.processEvents()
    rows = []
    for index in range(args.runs):
        load_before = os.getloadavg()[0]
        with event_loop_ticks() as ticks:
            widget.run()
            while widget.worker is None or not widget.run_button.enabled:
                QApplication.processEvents()
                time.sleep(0.002)
        run = widget.slide_run
        gaps = np.diff(ticks)
        starts = np.asarray(ticks[:-1])
        touches = np.array([any(a <= end and start <= b for start, end in run.layer_work)
                            for a, b in zip(starts, starts + gaps)], dtype=bool)
        rows.append({
            "run": index + 1,
            "stage": run.stage,
            **run.timings,
            "longest_stall_outside_layer_steps_ms": round(float(gaps[~touches].max()) * 1000, 1),
            "longest_stall_ms": round(float(gaps.max()) * 1000, 1),
            "stalls_over_100ms_outside_layer_steps": int((gaps[~touches] > 0.1).sum()),
            "layer_steps_ms": [round((b - a) * 1000) for a, b in run.layer_work],
            "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "status": widget.status.value,
        })
        print(json.dumps(rows[-1]), flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
