"""Progress reporting and cooperative cancellation shared by every long-running job.

A job calls ``progress(done, total, message)`` as it goes and ``cancel.check()`` between chunks
of work; ``check`` raises ``Cancelled`` once ``cancel.set()`` was called from another thread, so a
job stops within one chunk (chunks are sized to take well under a second). Inference runs, the
pyramid builder of the workspace store and the CLI's progress bars all use these types.

A job made of stages reports through :class:`StagedProgress`: each stage's own ``(done, total)`` fills
that stage's share of one bar of :data:`PROGRESS_SCALE` steps, and the bar never goes backwards (a
report that would move it back holds it where it is and is counted in ``held_back``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Protocol

logger = logging.getLogger(__name__)

PROGRESS_SCALE = 1000  # steps of a staged job's bar: ``progress(done, PROGRESS_SCALE, message)``


class Cancelled(Exception):
    """Raised inside a job when its cancel token was set."""


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int, message: str) -> None: ...


def no_progress(done: int, total: int, message: str) -> None:
    """A progress callback that ignores everything."""


class CancelToken:
    """A thread-safe flag a GUI or CLI sets to stop a job at its next check."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise ``Cancelled`` if cancellation was asked for."""
        if self._event.is_set():
            raise Cancelled("cancelled")


class StagedProgress:
    """One job's progress over named stages, as ``callback(done, PROGRESS_SCALE, message)``.

    ``stages``: each stage's share of the bar, in the order the job runs them. ``self(stage, done,
    total, message)`` checks ``cancel`` and reports; :meth:`report` reports without the check (for
    work that must finish once started). The reported value never decreases: a stage reported out of
    order, or a ``done`` that shrinks, holds the bar (``held_back`` counts such reports).
    """

    def __init__(self, stages: Mapping[str, float], callback: ProgressCallback,
                 cancel: CancelToken | None = None) -> None:
        if not stages or any(share <= 0 for share in stages.values()):
            raise ValueError(f"stages need positive shares, got {dict(stages)}")
        self.callback, self.cancel = callback, cancel
        self._shares = dict(stages)
        self._starts: dict[str, float] = {}
        start = 0.0
        for name, share in self._shares.items():
            self._starts[name] = start
            start += share
        self._total = start
        self._last = 0
        self.held_back = 0

    def __call__(self, stage: str, done: int, total: int, message: str) -> None:
        if self.cancel is not None:
            self.cancel.check()
        self.report(stage, done, total, message)

    def report(self, stage: str, done: int, total: int, message: str) -> None:
        """Move the bar to ``done/total`` of ``stage`` (never back) and pass ``message`` on."""
        within = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
        value = round(PROGRESS_SCALE * (self._starts[stage] + self._shares[stage] * within) / self._total)
        if value < self._last:
            self.held_back += 1
            logger.debug("progress of stage %s (%d/%d) would go back from %d to %d; held", stage, done, total,
                         self._last, value)
            value = self._last
        self._last = value
        self.callback(value, PROGRESS_SCALE, message)

    def stage(self, name: str) -> ProgressCallback:
        """A plain ``(done, total, message)`` callback for one stage (for code that knows no stages)."""

        def report(done: int, total: int, message: str) -> None:
            self(name, done, total, message)

        return report

    def finish(self, message: str = "done") -> None:
        """The whole bar: the job is done."""
        self._last = PROGRESS_SCALE
        self.callback(PROGRESS_SCALE, PROGRESS_SCALE, message)
