"""How GUI tests drive the Segment and Train widgets: wait until they have loaded PyTorch, measure
event-loop stalls and the time Cancel takes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

TICK_MS = 10


@contextmanager
def event_loop_ticks(keep: Callable[[], bool] = lambda: True) -> Iterator[list[float]]:
    """Yields the list of times (``time.perf_counter`` s) at which a 10 ms ``QTimer`` fired inside the
    block, each recorded when ``keep()`` is true; gaps between them are how long the event loop was
    blocked."""
    ticks: list[float] = []

    def tick() -> None:
        if keep():
            ticks.append(time.perf_counter())

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    timer.start()
    try:
        yield ticks
    finally:
        timer.stop()


def wait_for_segment_run(qtbot, widget, timeout_ms: int = 300_000) -> None:
    """Wait until the Segment widget's running job has finished and every result layer is added (the
    hidden probability layers follow the ``lesions`` layer one per event-loop turn). Run is enabled again
    when the job has finished, however fast it failed (a signal emitted before a wait connects is missed)."""
    qtbot.waitUntil(lambda: widget.run_button.enabled and not widget.pending_layers, timeout=timeout_ms)


def cancel_and_time(qtbot, widget) -> float:
    """Click the widget's Cancel and wait until its worker has finished (Run is enabled again);
    returns the seconds between the click and that."""
    widget.cancel_button.clicked.emit()
    cancelled_at = time.perf_counter()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)
    return time.perf_counter() - cancelled_at


def wait_until_ready(widget, timeout_s: float = 120.0):
    """Run the event loop until ``widget`` (Segment or Train) has loaded PyTorch off the GUI thread and, for
    Segment, its default model (which starts loading once the choice has settled); returns it. A test
    that times a run then measures the run, not a load beside it."""
    deadline = time.perf_counter() + timeout_s
    while not widget.ready:
        assert time.perf_counter() < deadline, "the widget did not finish loading PyTorch"
        QApplication.processEvents()
        time.sleep(0.005)
    if hasattr(widget, "preload_worker"):
        from napari_m2mrf.widgets.segment import PRELOAD_DELAY_MS

        settle = time.perf_counter() + PRELOAD_DELAY_MS / 1000 + 0.1
        while time.perf_counter() < settle or (widget.preload_worker is not None and widget.preload_worker.is_alive()):
            assert time.perf_counter() < deadline, "the widget did not finish loading its model"
            QApplication.processEvents()
            time.sleep(0.005)
    return widget
