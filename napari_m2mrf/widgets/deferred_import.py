"""Import PyTorch and the model modules off the GUI thread, then finish building a widget.

Importing torch takes one to two seconds; done in a widget's constructor it would freeze the
viewer when the widget opens. Widgets build their controls at once, import on a daemon thread, and
fill in what needs torch (devices, model lists) on the GUI thread when the import is done.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Sequence

from qtpy.QtCore import QObject, Signal

LOADING = "loading PyTorch…"
STILL_LOADING = "PyTorch is still loading; try again in a moment"


class _Finished(QObject):
    """Carries the outcome ("" or an error message) from the import thread to the GUI thread."""

    finished = Signal(str)


def device_choices(loaded: bool) -> list[str]:
    """The device box's choices: "auto", then (once torch is loaded) the devices torch can use."""
    if not loaded:
        return ["auto"]
    from napari_m2mrf.inference.devices import available_devices

    return ["auto"] + available_devices()


def after_import(owner: QObject, modules: Sequence[str], callback: Callable[[str], None]) -> None:
    """Import ``modules`` and call ``callback("")`` on the GUI thread, or ``callback(message)`` when one
    fails to import. When all are imported already (another widget loaded them) the callback runs at
    once; otherwise they are imported on a daemon thread and the callback is queued to ``owner``'s thread."""

    def load() -> str:
        try:
            for name in modules:
                importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported to the user, not raised
            return f"PyTorch or the models could not be loaded: {type(exc).__name__}: {exc}"
        return ""

    if all(name in sys.modules for name in modules):
        callback(load())
        return
    relay = _Finished(owner)  # parented, so it lives as long as the widget and is deleted with it
    relay.finished.connect(callback)

    def run() -> None:
        message = load()
        try:
            relay.finished.emit(message)
        except RuntimeError:  # the widget was closed meanwhile
            pass

    threading.Thread(target=run, name="m2mrf-import", daemon=True).start()
