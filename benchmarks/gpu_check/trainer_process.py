"""Run ``python -m training`` as a child, collect its JSON events, and stop it at a deadline."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .budget import GRACE_S

LOG = logging.getLogger("gpu_check")
STOP_LEAD_S = 15.0  # the STOP file is written this long before the deadline
TERM_AFTER_S = 5.0  # SIGTERM this long after the deadline, SIGKILL at GRACE_S / 2


def run_trainer(command: list[str], cwd: Path, run_dir: Path, deadline: float) -> tuple[list[dict[str, Any]], bool]:
    """Run the trainer ``command`` in ``cwd`` until it ends; returns its JSON events and whether the
    deadline (epoch seconds) asked it to stop (a ``STOP`` file in ``run_dir``, then SIGTERM, SIGKILL).
    ``RuntimeError`` when it exits other than 0 or by SIGTERM."""
    events: list[dict[str, Any]] = []
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped = threading.Event()
    guard = threading.Thread(target=_watchdog, args=(process, run_dir, deadline, stopped), daemon=True)
    guard.start()
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        event = _event(line)
        if event is None:
            LOG.info("trainer | %s", line)
            continue
        events.append(event)
        if event.get("event") != "iteration" or event.get("iteration", 0) % 25 == 0:
            LOG.info("trainer | %s", line[:300])
    code = process.wait()
    guard.join(timeout=2)
    if code not in (0, -signal.SIGTERM):
        raise RuntimeError(f"trainer exit code {code}")
    return events, stopped.is_set()


def _event(line: str) -> dict[str, Any] | None:
    """The JSON event on ``line``, or None for other output."""
    if not line.startswith("{"):
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _watchdog(process: subprocess.Popen, run_dir: Path, deadline: float, stopped: threading.Event) -> None:
    """Until ``process`` ends: near the deadline write ``run_dir/STOP`` (the trainer stops cooperatively
    and saves), past it SIGTERM, and later SIGKILL."""
    while process.poll() is None:
        now = time.time()
        if now > deadline - STOP_LEAD_S and not stopped.is_set():
            stopped.set()
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "STOP").touch()
            LOG.info("fundus: deadline near, asking the trainer to stop")
        if now > deadline + TERM_AFTER_S:
            process.send_signal(signal.SIGTERM)
        if now > deadline + GRACE_S / 2:
            process.kill()
        time.sleep(0.5)
