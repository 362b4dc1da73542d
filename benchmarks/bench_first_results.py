"""A new user's first minutes in a real viewer (issue 16): sample opening, model preload, first Segment.

Measures, in one fresh process with a fresh sample cache (``--cache`` to reuse one):

* opening each sample (File ▸ Open Sample as napari calls it: on the GUI thread), the slide first;
* docking Segment lesions until PyTorch is imported and the default model is loaded (off the GUI thread);
* Run on the 1411² fundus sample → ``lesions`` on screen, and → the run's last layer added;
* the process's CPU time in each step (all threads: on an idle machine with two cores the wall time lies
  between half of it and all of it);
* the longest GUI-thread stall in every step (:class:`~napari_m2mrf.widgets.stall_monitor.StallMonitor`)
  and every stall over 100 ms with its step.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_first_results.py [--cache DIR] [--json OUT]``
(headless: starts Xvfb like the demo). Figures in BENCHMARKS.md, "First results".
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _wait(done, timeout_s: float = 300.0) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError("timed out")
        QApplication.processEvents()
        time.sleep(0.002)


def measure() -> dict:
    import napari

    from napari_m2mrf.widgets.stall_monitor import StallMonitor

    figures: dict = {}
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1100)
    monitor = StallMonitor().start()

    def step(name: str, work) -> object:
        start, cpu = time.perf_counter(), time.process_time()
        with monitor.step(name):
            result = work()
        figures[f"{name}_s"] = round(time.perf_counter() - start, 3)
        figures[f"{name}_process_cpu_s"] = round(time.process_time() - cpu, 3)  # all threads: the work itself
        return result

    step("open slide sample", lambda: viewer.open_sample("napari-m2mrf", "slide"))
    with monitor.step("slide on screen"):
        _wait(lambda: True)
    step("open fundus_lesions sample", lambda: viewer.open_sample("napari-m2mrf", "fundus_lesions"))
    _, widget = step("dock Segment lesions",
                     lambda: viewer.window.add_plugin_dock_widget("napari-m2mrf", "Segment lesions"))
    step("PyTorch imported", lambda: _wait(lambda: widget.ready))
    step("default model loaded", lambda: _wait(
        lambda: widget.preload_worker is not None and not widget.preload_worker.is_alive()))
    image = next(layer for layer in viewer.layers if layer.name.startswith("fundus_lesions") and layer.rgb)
    widget.image.value = image
    widget.model.value = "fundus_m2mrf_w18s"
    start, cpu = time.perf_counter(), time.process_time()
    fractions: list[float] = []
    widget._signals.progressed.connect(lambda done, total, message: fractions.append(done / max(total, 1)))
    with monitor.step("Segment run"):
        widget.run()
        _wait(lambda: any(layer.name == "lesions" for layer in viewer.layers))
        figures["Run to lesions on screen_s"] = round(time.perf_counter() - start, 3)
        figures["Run to lesions on screen_process_cpu_s"] = round(time.process_time() - cpu, 3)
        _wait(lambda: widget.run_button.enabled and not widget.pending_layers)
        figures["Run to every layer_s"] = round(time.perf_counter() - start, 3)
    monitor.stop()
    figures["progress_fractions"] = [round(f, 3) for f in fractions]
    figures["max_stall_by_step_s"] = {k: round(v, 3) for k, v in monitor.max_by_step.items()}
    figures["stalls_over_100ms"] = [vars(s) for s in monitor.stalls]
    viewer.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="sample cache to use (default: a fresh one)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    os.environ["NAPARI_M2MRF_CACHE"] = str(args.cache or tempfile.mkdtemp(prefix="m2mrf-bench-cache-"))
    from napari_m2mrf.demo import display_available

    with display_available():
        figures = measure()
    figures["load_average"] = os.getloadavg()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
