"""Progress events of a training run: what the CLI prints as JSON lines and a widget plots.

Every event is a small dataclass; :func:`event_record` turns it into a JSON-ready dict with an
``"event"`` key (``started``, ``iteration``, ``evaluation``, ``checkpoint``, ``finished``), and
:func:`parse_event` (or :class:`EventStream` over a process's output) turns such a line back into the
event. Iterations count completed optimiser steps (the first step is iteration 1).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Started:
    """The run is set up. ``iteration``: steps already done (non-zero after a resume)."""

    iteration: int
    iterations: int
    world_size: int
    device: str
    output_dir: str
    resumed_from: str = ""
    fine_tuned_from: str = ""


@dataclass(frozen=True)
class IterationDone:
    """One optimiser step: global-batch mean of each loss term, learning rate used, wall seconds."""

    iteration: int
    lr: float
    losses: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Evaluated:
    """Validation metrics after ``iteration`` (``napari_m2mrf.metrics.LesionMetrics.compute``:
    ``mean`` and ``per_class``); ``score`` is the value that selects the best checkpoint."""

    iteration: int
    score: float
    mean: dict[str, float]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint was written (atomically). ``kind``: ``last`` (resume state + model) or ``best``."""

    iteration: int
    kind: str
    path: str
    model_path: str


@dataclass(frozen=True)
class Finished:
    """The run ended: at ``iterations`` or, with ``stopped``, on a stop request (after writing last)."""

    iteration: int
    stopped: bool
    last: str
    best: str


Event = Union[Started, IterationDone, Evaluated, CheckpointSaved, Finished]

_NAMES = {
    Started: "started",
    IterationDone: "iteration",
    Evaluated: "evaluation",
    CheckpointSaved: "checkpoint",
    Finished: "finished",
}


def event_record(event: Event) -> dict[str, Any]:
    """``{"event": name, **fields}`` with NaN/inf replaced by None (strict JSON)."""
    return {"event": _NAMES[type(event)], **_finite(dataclasses.asdict(event))}


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


_TYPES = {name: kind for kind, name in _NAMES.items()}


def parse_event(line: str) -> Event | None:
    """The event a line of the trainer's output holds, or None for any other line (a log message, a
    foreign JSON value, a record of an unknown kind). Values :func:`event_record` wrote as None
    (non-finite floats) come back as NaN; fields a newer trainer adds are ignored."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    kind = _TYPES.get(record.get("event")) if isinstance(record, dict) else None
    if kind is None:
        return None
    names = {f.name for f in dataclasses.fields(kind)}
    try:
        return kind(**{key: _nan(value) for key, value in record.items() if key in names})
    except TypeError:  # a required field is missing
        return None


def _nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {key: _nan(item) for key, item in value.items()}
    return value


class EventStream:
    """The events in a process's output as it arrives in chunks (a line may come in pieces)."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> list[Event]:
        """The events of the lines ``text`` completes; other lines are skipped."""
        *lines, self._partial = (self._partial + text).split("\n")
        return [event for event in map(parse_event, lines) if event is not None]


def trained_model_path(events: list[Event]) -> str | None:
    """The model file a run leaves: its last ``best`` checkpoint, else its last checkpoint; None when
    the run did not finish."""
    if not any(isinstance(event, Finished) for event in events):
        return None
    saved = [event for event in events if isinstance(event, CheckpointSaved)]
    best = [event for event in saved if event.kind == "best"]
    return (best or saved)[-1].model_path if saved else None
