"""The demo's virtual display (PyVirtualDisplay): started when there is none, a clear message when it cannot be."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_m2mrf.demo import display_available
from napari_m2mrf.errors import UserError


def test_no_display_and_no_xvfb_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="apt-get install xvfb"):
        with display_available():
            pass


def test_starts_xvfb_when_there_is_no_display_and_stops_it_after() -> None:
    code = (
        "import os, pathlib\n"
        "from napari_m2mrf.demo import display_available\n"
        "with display_available():\n"
        "    display = os.environ['DISPLAY']\n"
        "    socket = pathlib.Path('/tmp/.X11-unix/X' + display[1:])\n"
        "    assert socket.exists(), display\n"
        "assert 'DISPLAY' not in os.environ\n"
        "print(display)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(":")


def test_existing_display_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":4242")
    with display_available():
        assert os.environ["DISPLAY"] == ":4242"


def test_after_qt_connected_the_process_exits_cleanly_and_xvfb_ends_with_it() -> None:
    code = (
        "import os\n"
        "from napari_m2mrf.demo import display_available\n"
        "with display_available():\n"
        "    from qtpy.QtWidgets import QApplication, QWidget\n"
        "    app = QApplication([])\n"
        "    window = QWidget()\n"
        "    window.show()\n"
        "    app.processEvents()\n"
        "print(os.environ['DISPLAY'])\n"  # Qt still holds its connection: the server is left running
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    socket = Path("/tmp/.X11-unix/X" + result.stdout.strip()[1:])
    deadline = time.monotonic() + 10
    while socket.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not socket.exists(), "Xvfb (-terminate) should end once Qt's connection closes"
