"""Progress reporting and cooperative cancellation shared by every long-running job.

A job calls ``progress(done, total, message)`` as it goes and ``cancel.check()`` between chunks
of work; ``check`` raises ``Cancelled`` once ``cancel.set()`` was called from another thread, so a
job stops within one chunk (chunks are sized to take well under a second). Inference runs, the
pyramid builder of the workspace store and the CLI's progress bars all use these types.
"""

from __future__ import annotations

import threading
from typing import Protocol


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
