"""Keyboard shortcuts of the plugin's main actions (listed in README.md, "Keyboard shortcuts").

Each is a ``QShortcut`` on the widget with window context: it works wherever the focus is in the
napari window the widget is docked in (canvas, layer list, the widget), and goes away with the
widget. The keys are chosen clear of napari's own bindings and of the menu bar's Alt mnemonics
(File, View, Layers, Plugins, Window, Help).
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QShortcut, QWidget

SHORTCUTS: dict[str, str] = {
    "segment_run": "Alt+R",  # Segment lesions: Run
    "correct_save": "Alt+K",  # Correct lesions: Save (keep) the corrections
    "next_class": "Alt+.",  # Correct lesions: next lesion class
    "previous_class": "Alt+,",  # Correct lesions: previous lesion class
    "steer_compare": "Alt+T",  # Steer sampling: toggle between the new run and the previous one
    "steer_run": "Alt+Shift+R",  # Steer sampling: Run with this map
}


def add_shortcut(widget: QWidget, action: str, callback: Callable[[], object]) -> QShortcut:
    """Bind ``SHORTCUTS[action]`` to ``callback`` in the window ``widget`` is shown in."""
    shortcut = QShortcut(QKeySequence(SHORTCUTS[action]), widget)
    shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
    shortcut.activated.connect(callback)
    return shortcut
