"""Stage ``cuda_tests``: ``pytest -m cuda tests/test_cuda.py`` in isolation, counted from its JUnit XML.

The run uses ``scripts/gpu_pytest.ini`` with plugin autoloading off, so no pytest-qt, pytest-xvfb
or pydantic is needed on the device machine. Without CUDA every test skips (pytest exit code 0 or
5 both count as a pass).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .settings import REPO, Settings

LOG = logging.getLogger("gpu_check")


def stage_cuda_tests(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Run the CUDA tests until ``deadline`` (epoch seconds); figures: tests collected, pytest seconds."""
    junit = scratch / "cuda_tests.xml"
    command = [
        sys.executable, "-m", "pytest", "-c", str(REPO / "scripts" / "gpu_pytest.ini"), "--rootdir", str(REPO),
        "-p", "no:cacheprovider", "-m", "cuda", "-q", f"--junitxml={junit}", str(REPO / "tests" / "test_cuda.py"),
    ]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    began = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=max(5.0, deadline - time.time()))
    seconds = time.perf_counter() - began
    for line in (completed.stdout + completed.stderr).splitlines():
        LOG.info("pytest | %s", line)
    counts, cases = _junit_counts(junit)
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    if completed.returncode not in (0, 5) or counts["failures"] or counts["errors"]:
        raise RuntimeError(f"pytest exit code {completed.returncode}: {counts}")
    return {
        "figures": {"tests_collected": counts["tests"], "pytest_seconds": round(seconds, 2)},
        "results": {**counts, "passed": passed, "cases": cases, "exit_code": completed.returncode,
                    "command": " ".join(command)},
    }


def _junit_counts(junit: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Suite counts (tests, failures, errors, skipped) and each test case's outcome; zeros without a file."""
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    cases: dict[str, str] = {}
    if not junit.is_file():
        return counts, cases
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    for key in counts:
        counts[key] = int(suite.get(key, 0))
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = tag
        cases[case.get("name", "?")] = outcome
    return counts, cases
