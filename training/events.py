"""Progress events of a training run: what the CLI prints as JSON lines and a widget plots.

Every event is a small dataclass; :func:`event_record` turns it into a JSON-ready dict with an
``"event"`` key (``started``, ``iteration``, ``evaluation``, ``checkpoint``, ``finished``).
Iterations count completed optimiser steps (the first step is iteration 1).
"""

from __future__ import annotations

import dataclasses
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
