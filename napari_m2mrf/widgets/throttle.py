"""The newest of a stream of values put on screen at most once per interval (a dock's progress bar, its status line).

Each repaint of a dock makes Qt composite napari's OpenGL canvas again (40-110 ms of CPU on software
OpenGL), so a job that reports often would slow itself and the viewer if every report were shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from qtpy.QtCore import QTimer

T = TypeVar("T")


class Throttle(Generic[T]):
    """Shows the newest value offered at most once every ``interval_s`` seconds (GUI thread only).

    ``show(value)`` puts a value on screen and returns False when its widget is gone (the interval
    then does not restart). An offer inside the interval is shown by one single-shot timer when the
    interval is over, with whatever value is newest by then; ``at_once`` shows it now.
    """

    def __init__(self, interval_s: float, show: Callable[[T], bool]) -> None:
        self.interval_s = interval_s
        self._show = show
        self._latest: T | None = None  # the newest value not shown yet
        self._scheduled = False
        self._shown_at = 0.0  # time.perf_counter() of the last show, in seconds

    def offer(self, value: T, *, at_once: bool = False) -> None:
        """Show ``value`` now (``at_once``, or the interval is over) or when the interval is over."""
        self._latest = value
        wait = self.interval_s - (time.perf_counter() - self._shown_at)
        if at_once or wait <= 0:
            self._show_latest()
        elif not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(int(1000 * wait) + 1, self._show_latest)

    def drop(self) -> None:
        """Forget the value waiting to be shown (a timer still due then shows nothing)."""
        self._latest = None

    def _show_latest(self) -> None:
        self._scheduled = False
        if self._latest is None:
            return
        value, self._latest = self._latest, None
        now = time.perf_counter()
        if self._show(value):
            self._shown_at = now
