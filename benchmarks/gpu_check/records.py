"""The check's JSON: one ``<stage>.json`` per stage and the summary ``gpu_check.json``.

A stage record is ``{"stage", "ok", "tiny", "device", "figures", "results", "wall_s"}`` (``"error"``
instead of figures and results when it failed); the summary keeps every record without its
``results``, and every figure as ``<stage>.<figure>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (a ``.tmp`` file renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_stage_record(out: Path, name: str, exit_code: int | None) -> dict[str, Any]:
    """``out/<name>.json`` as written by the stage; when the stage left none (it crashed or was
    killed, ``exit_code`` < 0), an error record, which is written there too."""
    path = out / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if exit_code is not None and exit_code < 0:
        error = f"no result (exit code {exit_code}; killed past its deadline)"
    else:
        error = f"no result (exit code {exit_code})"
    record = {"stage": name, "ok": False, "error": error}
    write_json(path, record)
    return record


def skipped_record(name: str) -> dict[str, Any]:
    """The record of a stage not started for want of time (no ``<stage>.json`` is written)."""
    return {"stage": name, "ok": False, "error": "skipped: no time left in the budget", "wall_s": 0.0}


def new_summary(tiny: bool, device: dict[str, Any], budget_s: float, started: float) -> dict[str, Any]:
    """The summary before any stage ran; ``started`` is when the check began (epoch seconds)."""
    return {
        "check": "napari-m2mrf GPU check", "mode": "tiny" if tiny else "full", "device": device,
        "budget_s": budget_s, "setup_s": round(time.time() - started, 2), "stages": {}, "figures": {},
    }


def add_stage(summary: dict[str, Any], name: str, record: dict[str, Any]) -> None:
    """Put a stage's record (less its ``results``) and its figures into ``summary``."""
    summary["stages"][name] = {k: v for k, v in record.items() if k != "results"}
    for key, value in (record.get("figures") or {}).items():
        summary["figures"][f"{name}.{key}"] = value


def finish_summary(summary: dict[str, Any], started: float) -> None:
    """Add the total seconds since ``started`` (epoch seconds) and every stage's error."""
    summary["total_s"] = round(time.time() - started, 2)
    summary["errors"] = {name: r["error"] for name, r in summary["stages"].items() if r.get("error")}
