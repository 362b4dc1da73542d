"""Opening the Segment or Train widget does not freeze the viewer while PyTorch loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from napari_m2mrf.widgets.deferred_import import LOADING, STILL_LOADING, after_import

SCRIPT = Path(__file__).with_name("open_widget_fresh.py")


@pytest.mark.parametrize("name", ["Segment lesions", "Train lesion model"])
def test_widget_opens_at_once_and_loads_torch_off_the_gui_thread(name: str, private_cache: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), name], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["torch_before"], "a fresh napari must not have imported torch"
    # the widget is there before torch is: its model list waits, its run button is off
    assert report["at_once"]["model"] == LOADING and not report["at_once"]["button_enabled"]
    assert report["at_once"]["status_after_early_call"] == STILL_LOADING
    assert report["loaded"], "the widget never finished loading PyTorch"
    if name == "Segment lesions":  # trained models only; Train offers the architectures
        assert "fundus_m2mrf_w18s" in report["models"] and "m2mrf_hrnetv2_w18s" not in report["models"]
    else:
        assert "m2mrf_hrnetv2_w18s" in report["models"]
    assert report["devices"][:2] == ["auto", "cpu"]
    # importing torch takes over a second; meanwhile the event loop kept answering
    assert report["longest_stall"] <= 0.6, f"the viewer froze for {report['longest_stall']:.2f} s while torch loaded"


def test_a_failed_import_is_reported_to_the_widget(qtbot) -> None:
    from qtpy.QtCore import QObject

    owner = QObject()
    outcomes: list[str] = []
    after_import(owner, ["napari_m2mrf.no_such_module"], outcomes.append)
    qtbot.waitUntil(lambda: bool(outcomes), timeout=60_000)  # at once where torch is loaded, else queued
    assert len(outcomes) == 1 and "could not be loaded" in outcomes[0] and "no_such_module" in outcomes[0]
    outcomes.clear()
    after_import(owner, ["json"], outcomes.append)
    qtbot.waitUntil(lambda: bool(outcomes), timeout=60_000)
    assert outcomes == [""]
