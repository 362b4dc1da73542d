"""``napari-m2mrf -v``: the library's decisions logged to stderr; without it, the usual output only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _convert(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    source = tmp_path / "eye.png"
    if not source.exists():
        Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save(source)
    out = tmp_path / f"eye{''.join(flags)}.zarr"
    code = "import sys; from napari_m2mrf.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *flags, "convert", str(source), str(out), "--quiet"],
        capture_output=True, text=True, timeout=120, check=True,
    )


def test_verbose_logs_decisions_and_default_prints_nothing_new(tmp_path: Path) -> None:
    quiet = _convert(tmp_path)
    assert quiet.stderr == "" and quiet.stdout.startswith("wrote ")
    verbose = _convert(tmp_path, "-v")
    assert verbose.stdout.replace("eye-v", "eye") == quiet.stdout
    lines = verbose.stderr.splitlines()
    assert any(line.startswith("INFO napari_m2mrf.io.formats: ") and "png content, 96×64 px" in line for line in lines)
    assert any(line.startswith("INFO napari_m2mrf.io.workspace: ") and "created workspace" in line for line in lines)
    assert not any(line.startswith("DEBUG") for line in lines)
    debug = _convert(tmp_path, "-vv")
    assert any(line.startswith("DEBUG ") for line in debug.stderr.splitlines())
