"""A one-line text progress bar for the command line (redrawn at most five times a second)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TextProgress:
    """``label [#####.....]  40% 4/10 message``, redrawn in place on ``stream``; with ``total_bytes``
    (the size of all the work) also the throughput in MB/s."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30, total_bytes: int | None = None) -> None:
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.total_bytes = total_bytes
        self.started = time.monotonic()
        self.last_drawn = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self.last_drawn < 0.2:
            return
        self.last_drawn = now
        fraction = done / total if total else 1.0
        filled = int(round(self.width * fraction))
        if self.total_bytes is not None:
            message = f"{fraction * self.total_bytes / max(now - self.started, 1e-6) / 1e6:6.1f} MB/s {message}"
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {100 * fraction:5.1f}% {done}/{total} {message}"
        )
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
