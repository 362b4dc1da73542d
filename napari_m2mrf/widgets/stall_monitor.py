"""How long the GUI thread was blocked: a timer on the GUI thread that records the gaps between its ticks.

A ``QTimer`` firing every :data:`TICK_MS` ms on the GUI thread can only fire when the event loop is free,
so the gap between two ticks bounds from above how long the loop was blocked in between (a gap of
110 ms: up to 110 ms during which the viewer did not answer). :class:`StallMonitor` keeps every tick
time, the longest gap, and the gaps over a threshold with the step that was running
(:meth:`StallMonitor.step`), so a caller can say *where* the GUI stalled. The demo records the longest
gap as ``max_gui_stall_s``; the GUI tests and benchmarks use the same monitor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from qtpy.QtCore import QObject, Qt, QTimer

logger = logging.getLogger(__name__)

TICK_MS = 10  # the timer's interval: stalls shorter than this are not seen
STALL_S = 0.1  # a gap longer than this is a stall worth naming


@dataclass
class Stall:
    """One gap between ticks longer than the threshold: when it started (s after the monitor started),
    how long it was, which step was running, and the CPU time the GUI thread itself used in it (close
    to ``seconds``: the GUI thread was busy; much less: it waited — for the GIL or, on a loaded
    machine, for a core)."""

    at_s: float
    seconds: float
    step: str
    cpu_s: float


class StallMonitor(QObject):
    """Ticks of a ``QTimer`` on the GUI thread while started; the gaps between them are stalls.

    Create and start it on the GUI thread. ``ticks``: ``time.perf_counter()`` of every tick;
    :attr:`max_stall_s`: the longest gap; :attr:`stalls`: gaps over ``threshold_s`` with their step;
    :attr:`max_by_step`: the longest gap seen during each named step.
    """

    def __init__(self, threshold_s: float = STALL_S) -> None:
        super().__init__()
        self.threshold_s = threshold_s
        self.ticks: list[float] = []
        self._cpu = 0.0
        self.stalls: list[Stall] = []
        self.max_by_step: dict[str, float] = {}
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._step = ""
        self._started = 0.0

    def start(self) -> StallMonitor:
        """Start ticking (a fresh record); returns the monitor."""
        self.ticks.clear()
        self.stalls.clear()
        self.max_by_step.clear()
        self._started = time.perf_counter()
        self._cpu = time.thread_time()
        self.ticks.append(self._started)
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop ticking; the gap up to now counts (a stall that lasts until the stop is seen)."""
        if self._timer.isActive():
            self._tick()
            self._timer.stop()

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Name the gaps that end while the block runs (and the one that ends right after it) ``name``."""
        previous, self._step = self._step, name
        try:
            yield
        finally:
            if self._timer.isActive():
                self._tick()  # the block itself blocked the loop until now: that gap is this step's
            self._step = previous

    @property
    def max_stall_s(self) -> float:
        """The longest gap between ticks so far (0 before two ticks)."""
        if len(self.ticks) < 2:
            return 0.0
        return max(b - a for a, b in zip(self.ticks, self.ticks[1:]))

    def max_stall_between(self, start: float, end: float) -> float:
        """The longest gap that ends within ``[start, end]`` (``time.perf_counter`` seconds)."""
        gaps = [b - a for a, b in zip(self.ticks, self.ticks[1:]) if start <= b <= end]
        return max(gaps, default=0.0)

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        gap = now - self.ticks[-1] if self.ticks else 0.0
        busy, self._cpu = cpu - self._cpu, cpu
        self.ticks.append(now)
        step = self._step or "idle"
        if gap > self.max_by_step.get(step, 0.0):
            self.max_by_step[step] = gap
        if gap > self.threshold_s:
            self.stalls.append(Stall(round(now - gap - self._started, 3), round(gap, 3), step, round(busy, 3)))
            logger.debug("GUI thread blocked %.3f s, %.3f s of it busy (%s)", gap, busy, step)


@contextmanager
def monitoring(threshold_s: float = STALL_S) -> Iterator[StallMonitor]:
    """A started :class:`StallMonitor` for the block, stopped after it."""
    monitor = StallMonitor(threshold_s=threshold_s).start()
    try:
        yield monitor
    finally:
        monitor.stop()
