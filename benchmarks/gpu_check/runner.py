"""Run the chosen stages within the budget and write the summary.

Each stage normally runs in its own child process (``python -m benchmarks.gpu_check OUT --stage
NAME``): a crash or hang of one stage is recorded and the next still runs, a child past its
deadline plus ``GRACE_S`` is killed, and each child has its own CUDA context, so peak-memory
figures are its own. A tiny run without CUDA runs the stages in this process instead (no torch
import per stage; the CPU peak-memory figure is then the process's peak so far). Caches, bytecode
and temporary files of every stage go under ``OUT_DIR/scratch``, which is deleted at the end unless
``keep_scratch``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from . import records
from .budget import GRACE_S, MIN_STAGE_S, STAGES, stage_deadline
from .device import device_info
from .settings import REPO, Settings
from .stages import run_stage

LOG = logging.getLogger("gpu_check")


def run_check(out: Path, budget_s: float, started: float, tiny: bool | None, stages: list[str],
              idrid: str | None, keep_scratch: bool) -> int:
    """Run ``stages`` (in the order of ``STAGES``) until ``started + budget_s`` (epoch seconds);
    ``tiny`` None: tiny exactly when there is no CUDA. Returns 0 when no stage had an error, else 1."""
    end = started + budget_s
    scratch = out / "scratch"
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    _keep_files_under(scratch)
    info = device_info()
    tiny = (not info["cuda_available"]) if tiny is None else tiny
    device = "cuda" if info["cuda_available"] else "cpu"
    settings = Settings.for_run(tiny, device, idrid)
    in_process = tiny and device == "cpu"
    summary = records.new_summary(tiny, info, budget_s, started)
    chosen = [stage for stage in STAGES if stage[0] in stages]
    with open(out / "gpu_check.log", "a", encoding="utf-8") as log_file:
        log_file.write(f"gpu check {time.strftime('%Y-%m-%d %H:%M:%S')} mode {summary['mode']} device {info}\n")
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        logging.getLogger().addHandler(handler)
        try:
            for index, (name, _, _) in enumerate(chosen):
                deadline = stage_deadline(chosen, index, budget_s, end, tiny)
                if deadline - time.time() < MIN_STAGE_S:
                    summary["stages"][name] = records.skipped_record(name)
                    continue
                LOG.info("stage %s: %.0f s until its deadline", name, deadline - time.time())
                began = time.perf_counter()
                if in_process:
                    record = run_stage(name, settings, out, deadline)
                else:
                    record = _run_child(name, settings, out, deadline, log_file)
                record["wall_s_with_startup"] = round(time.perf_counter() - began, 2)
                records.add_stage(summary, name, record)
                LOG.info("stage %s: %s in %.1f s", name, "ok" if record.get("ok") else record.get("error"),
                         record["wall_s_with_startup"])
        finally:
            logging.getLogger().removeHandler(handler)
        records.finish_summary(summary, started)
        records.write_json(out / "gpu_check.json", summary)
        log_file.write(f"gpu check done in {summary['total_s']} s; errors: {summary['errors'] or 'none'}\n")
    if not keep_scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    LOG.info("summary: %s", out / "gpu_check.json")
    return 0 if not summary["errors"] else 1


def _keep_files_under(scratch: Path) -> None:
    """Point caches, bytecode and temporary files of this process and its children into ``scratch``."""
    os.environ.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "NAPARI_M2MRF_CACHE": str(scratch / "cache"), "TMPDIR": str(scratch / "tmp"),
        "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX", str(scratch / "pycache")),
        "MPLCONFIGDIR": str(scratch / "mpl"), "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
        "PYTHONUNBUFFERED": "1",
    })
    sys.pycache_prefix = sys.pycache_prefix or os.environ["PYTHONPYCACHEPREFIX"]
    tempfile.tempdir = None  # tempfile reads TMPDIR again


def _run_child(name: str, settings: Settings, out: Path, deadline: float, log_file: IO[str]) -> dict[str, Any]:
    """Run stage ``name`` in a child process, its output copied to stderr and ``log_file``; kill it
    ``GRACE_S`` past ``deadline`` (epoch seconds). Returns the record it left (or an error record)."""
    command = [sys.executable, "-m", "benchmarks.gpu_check", str(out), "--stage", name, "--deadline", str(deadline),
               "--device", settings.device, "--tiny" if settings.tiny else "--full"]
    command += ["--idrid", settings.idrid] if settings.idrid else []
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = threading.Thread(target=_copy_output, args=(process, log_file), daemon=True)
    reader.start()
    try:
        process.wait(timeout=max(1.0, deadline - time.time() + GRACE_S))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join(timeout=5)
    return records.read_stage_record(out, name, process.returncode)


def _copy_output(process: subprocess.Popen, log_file: IO[str]) -> None:
    """Copy ``process``'s output lines to stderr and ``log_file`` until it closes."""
    assert process.stdout is not None
    for line in process.stdout:
        sys.stderr.write(line)
        log_file.write(line)
        log_file.flush()
