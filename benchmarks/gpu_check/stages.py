"""The stages by name, and running one of them into its ``<stage>.json`` record."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cuda_tests import stage_cuda_tests
from .fundus import stage_fundus
from .inference import stage_inference
from .records import write_json
from .settings import Settings
from .slide import stage_slide
from .training_speed import stage_training

LOG = logging.getLogger("gpu_check")

# name -> stage(settings, OUT_DIR, OUT_DIR/scratch, deadline in epoch seconds) -> {"figures", "results"}
STAGE_FUNCTIONS: dict[str, Callable[[Settings, Path, Path, float], dict[str, Any]]] = {
    "cuda_tests": stage_cuda_tests,
    "inference": stage_inference,
    "training": stage_training,
    "slide": stage_slide,
    "fundus": stage_fundus,
}


def run_stage(name: str, settings: Settings, out: Path, deadline: float) -> dict[str, Any]:
    """Run stage ``name`` and write ``out/<name>.json``; an exception is recorded as its ``error``."""
    began = time.perf_counter()
    record: dict[str, Any] = {"stage": name, "ok": False, "tiny": settings.tiny, "device": settings.device}
    try:
        record.update(STAGE_FUNCTIONS[name](settings, out, out / "scratch", deadline))
        record["ok"] = True
    except Exception as exc:  # recorded; the check goes on with the next stage
        LOG.exception("stage %s failed", name)
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["wall_s"] = round(time.perf_counter() - began, 2)
    write_json(out / f"{name}.json", record)
    return record
