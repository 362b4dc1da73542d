"""Docking the plugin's widgets imports nothing heavy on the GUI thread, and the background imports come one
after another: first what napari's layers and the Correct widget need (pandas, scipy.ndimage, pint's unit
registry), then PyTorch. Structural checks of what BENCHMARKS.md ("First results") measured: an import on
the GUI thread, or beside the GUI thread's own work, stalled the viewer 0.5–1.9 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui

SCRIPT = Path(__file__).with_name("dock_widgets_fresh.py")


def test_docking_imports_nothing_heavy_on_the_gui_thread_and_torch_comes_after_the_warm_up(
    private_cache: Path,
) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["before"] == [], "a fresh napari must not have imported these"
    assert report["while_docking"] == [], f"imported on the GUI thread while docking: {report['while_docking']}"
    assert report["ready"], "the Segment widget never finished loading PyTorch"
    imports = report["imports"]
    assert set(imports) == {"torch", "pandas", "scipy.ndimage"}, imports
    assert not any(started["gui_thread"] for started in imports.values()), imports
    assert imports["torch"]["after_docking_s"] > max(imports["pandas"]["after_docking_s"],
                                                     imports["scipy.ndimage"]["after_docking_s"]), imports
    assert report["registry_built"] and report["units"] == ["pixel", "pixel"]
