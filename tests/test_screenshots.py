"""The README's screenshots script (``scripts/screenshots.sh`` → ``python -m benchmarks.screenshots``)
runs headless into a fresh folder and writes one non-blank, small PNG per widget plus the window."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.gui]

EXPECTED = ("segment", "correct", "metrics", "inventory", "train", "slide_edit", "window")


def test_the_screenshot_script_writes_every_png(tmp_path: Path, private_cache: Path) -> None:
    out = tmp_path / "shots"
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "screenshots.sh"), str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stem in EXPECTED:
        path = out / f"{stem}.png"
        assert path.is_file(), f"{path.name} missing; wrote {sorted(p.name for p in out.glob('*'))}"
        assert path.stat().st_size < 200_000, f"{path.name} is {path.stat().st_size} bytes"
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert min(pixels.shape[:2]) >= 100, f"{path.name}: {pixels.shape}"
        assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 16, f"{path.name} is blank"
