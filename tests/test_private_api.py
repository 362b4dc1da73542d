"""The plugin uses napari's public API only: private attributes such as ``viewer.window._qt_window``
change between napari releases without notice."""

from __future__ import annotations

import re
from pathlib import Path

import napari_m2mrf

PRIVATE = re.compile(r"\._qt_|window\._|\._qt\b")


def test_the_package_uses_no_private_napari_window_attributes() -> None:
    package = Path(napari_m2mrf.__file__).parent
    uses = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not uses, "\n".join(uses)


def test_the_pattern_catches_what_it_is_for() -> None:
    for line in ["viewer.window._qt_window.installEventFilter(self)", "w = viewer.window._qt_viewer",
                 "self._viewer.window._dock_widgets", "qt = viewer._qt"]:
        assert PRIVATE.search(line), line
    for line in ["viewer.window.add_dock_widget(widget)", "def _qt_connected() -> bool:", "self._window_samples(y0)"]:
        assert not PRIVATE.search(line), line
