"""Training events: the JSON lines the trainer prints read back into events, as the Train widget does."""

from __future__ import annotations

import json
import math

from training.events import (
    CheckpointSaved,
    Evaluated,
    EventStream,
    Finished,
    IterationDone,
    Started,
    event_record,
    parse_event,
    trained_model_path,
)

EVENTS = [
    Started(iteration=0, iterations=4, world_size=1, device="cpu", output_dir="/run"),
    IterationDone(iteration=1, lr=1e-3, losses={"loss": 0.9, "dice": 0.9}, seconds=0.5),
    Evaluated(iteration=2, score=0.25, mean={"aupr_official_11pt": 0.25}, per_class={"EX": {"iou": 0.1}}),
    CheckpointSaved(iteration=2, kind="best", path="/run/best.safetensors", model_path="/run/best.safetensors"),
    CheckpointSaved(iteration=4, kind="last", path="/run/last.pt", model_path="/run/last.safetensors"),
    Finished(iteration=4, stopped=False, last="/run/last.pt", best="/run/best.safetensors"),
]


def test_every_printed_event_parses_back_to_itself() -> None:
    for event in EVENTS:
        assert parse_event(json.dumps(event_record(event))) == event


def test_non_finite_values_come_back_as_nan() -> None:
    line = json.dumps(event_record(IterationDone(iteration=3, lr=1e-3, losses={"loss": math.inf}, seconds=0.1)))
    assert '"loss": null' in line
    assert math.isnan(parse_event(line).losses["loss"])


def test_other_lines_are_not_events() -> None:
    for line in ["", "Loading weights…", "[1, 2]", '"text"', "{broken", '{"event": "unknown"}',
                 '{"event": "iteration", "iteration": 1}', '{"no": "event"}']:
        assert parse_event(line) is None, line


def test_unknown_fields_of_a_newer_trainer_are_ignored() -> None:
    record = {**event_record(EVENTS[1]), "memory_mb": 123}
    assert parse_event(json.dumps(record)) == EVENTS[1]


def test_a_stream_joins_lines_that_arrive_in_pieces() -> None:
    text = "".join(json.dumps(event_record(event)) + "\n" for event in EVENTS[:3])
    text = "torch warning\n" + text
    stream = EventStream()
    pieces = [text[i : i + 17] for i in range(0, len(text), 17)]
    parsed = [event for piece in pieces for event in stream.feed(piece)]
    assert parsed == EVENTS[:3]
    assert stream.feed(json.dumps(event_record(EVENTS[5]))) == []  # no newline yet
    assert stream.feed("\n") == [EVENTS[5]]


def test_the_trained_model_is_the_best_checkpoint_else_the_last() -> None:
    assert trained_model_path(EVENTS) == "/run/best.safetensors"
    without_best = [e for e in EVENTS if not (isinstance(e, CheckpointSaved) and e.kind == "best")]
    assert trained_model_path(without_best) == "/run/last.safetensors"
    assert trained_model_path(EVENTS[:-1]) is None, "a run that did not finish leaves no model"
    assert trained_model_path([EVENTS[0], EVENTS[-1]]) is None
