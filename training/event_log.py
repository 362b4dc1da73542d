"""Where events are recorded: a JSON-lines file in the run folder, and TensorBoard when installed.

``events.jsonl`` gets one :func:`training.events.event_record` per line, flushed at once, so a
widget or ``tail -f`` follows a run live and a killed run keeps every line written before the
kill. A resumed run appends to the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.events import Evaluated, Event, IterationDone, event_record

EVENTS_FILE = "events.jsonl"


class EventLog:
    """Appends events to ``<folder>/events.jsonl``; with ``tensorboard`` also writes scalars
    (losses, learning rate, mean metrics) to ``<folder>/tensorboard`` when TensorBoard is installed
    (``tensorboard_available`` tells whether it is)."""

    def __init__(self, folder: Path, tensorboard: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / EVENTS_FILE
        self._file = self.path.open("a", encoding="utf-8")
        self._writer: Any = _tensorboard_writer(folder / "tensorboard") if tensorboard else None

    @property
    def tensorboard_available(self) -> bool:
        return self._writer is not None

    def write(self, event: Event) -> None:
        self._file.write(json.dumps(event_record(event)) + "\n")
        self._file.flush()
        if self._writer is None:
            return
        if isinstance(event, IterationDone):
            for name, value in event.losses.items():
                self._writer.add_scalar(f"train/{name}", value, event.iteration)
            self._writer.add_scalar("train/lr", event.lr, event.iteration)
        elif isinstance(event, Evaluated):
            for name, value in event.mean.items():
                self._writer.add_scalar(f"val/{name}", value, event.iteration)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def _tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))
